"""CPU runs keep freed memory (decoding/engine/host_memory.py), and the auto batch of fused points whose
rows share their forwards is sized per point (driver.auto_batch_size)."""

from __future__ import annotations

import sys

import pytest
import torch

import decodebench.decoding.engine.host_memory as hm
from decodebench.decoding.engine import CPU_AUTO_BATCH, Request, auto_batch_size, generate, shares_histories
from decodebench.decoding.search.spec import build_strategy


class FakeLibc:
    def __init__(self, refuse_above: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.refuse_above = refuse_above

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        refused = param == -3 and self.refuse_above is not None and value > self.refuse_above  # M_MMAP_THRESHOLD
        return 0 if refused else 1


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(hm, "_done", None)
    monkeypatch.delenv(hm.ENV, raising=False)


@pytest.mark.skipif(hm._glibc() is None, reason="glibc only (Linux)")
def test_glibc_takes_both_settings_once_per_process(fresh):
    assert hm.keep_freed_memory() is True
    assert hm.keep_freed_memory() is True


def test_the_thresholds_it_asks_for_and_the_fallback_for_an_older_glibc(fresh, monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(hm, "_glibc", lambda: libc)
    assert hm.keep_freed_memory() is True
    assert libc.calls == [(-3, 1 << 30), (-1, (1 << 31) - 1)]
    assert hm.keep_freed_memory() is True and len(libc.calls) == 2  # once per process

    monkeypatch.setattr(hm, "_done", None)
    old = FakeLibc(refuse_above=32 << 20)  # HEAP_MAX_SIZE / 2 on 64-bit
    monkeypatch.setattr(hm, "_glibc", lambda: old)
    assert hm.keep_freed_memory() is True
    assert old.calls == [(-3, 1 << 30), (-3, 32 << 20), (-1, (1 << 31) - 1)]


def test_system_leaves_malloc_alone_and_other_c_libraries_are_skipped(fresh, monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(hm, "_glibc", lambda: libc)
    monkeypatch.setenv(hm.ENV, "system")
    assert hm.keep_freed_memory() is False and libc.calls == []
    monkeypatch.setattr(hm, "_done", None)
    monkeypatch.delenv(hm.ENV)
    monkeypatch.setattr(hm, "_glibc", lambda: None)
    assert hm.keep_freed_memory() is False


def test_generate_on_a_cpu_keeps_freed_memory_first(tiny, monkeypatch):
    import decodebench.decoding.engine.driver as driver

    seen = []
    monkeypatch.setattr(driver, "keep_freed_memory", lambda: seen.append(1) or True)
    model, tok = tiny
    spec = build_strategy({"name": "greedy", "max_new_tokens": 3})
    outs, _ = generate(model, tok, [Request(prompt_id="a", prompt_ids=[1, 2, 3], params=spec.params)], spec)
    assert seen == [1] and len(outs[0].token_ids) == 3


def test_auto_batch_is_per_point_when_fused_rows_share_their_forwards(tiny):
    model, _ = tiny
    spec = build_strategy({"name": "topp", "max_new_tokens": 8})
    reqs = [Request(prompt_id=str(i), prompt_ids=[1, 2, 3], params=spec.params) for i in range(300)]
    assert auto_batch_size(model, reqs, spec) == CPU_AUTO_BATCH
    assert auto_batch_size(model, reqs, spec, shared_points=3) == 3 * CPU_AUTO_BATCH
    assert auto_batch_size(model, reqs, spec, shared_points=19) == 300  # at most the requests
    cpu = torch.device("cpu")
    assert shares_histories("auto", cpu) and not shares_histories(False, cpu)
    assert not shares_histories("auto", cpu, compile=True)  # static shapes: every row its own forward
    assert not shares_histories("auto", torch.device("meta")) and shares_histories(True, torch.device("meta"))


def test_runner_scales_the_auto_batch_only_for_one_token_points_that_share(tiny, cfg_of):
    from dataclasses import replace

    from decodebench import runner
    from decodebench.specs import to_specs

    model, _ = tiny
    run = to_specs(cfg_of(["model=tiny", "strategy=topp"]))
    spec = build_strategy(run.strategy)
    reqs = [Request(prompt_id=str(i), prompt_ids=[1, 2, 3], params=spec.params) for i in range(300)]
    assert runner.batch_size_for(run, model, reqs, spec, scale=3) == 3 * CPU_AUTO_BATCH
    assert runner.batch_size_for(replace(run, share_histories=False), model, reqs, spec, scale=3) == CPU_AUTO_BATCH
    assert runner.batch_size_for(replace(run, compile=True), model, reqs, spec, scale=3) == CPU_AUTO_BATCH
    beam = build_strategy({"name": "beam", "method": "beam", "num_beams": 2, "max_new_tokens": 4})
    assert runner.batch_size_for(run, model, reqs, beam, scale=3) == auto_batch_size(model, reqs, beam)
    assert runner.batch_size_for(replace(run, batch_size=4), model, reqs, spec, scale=3) == 12  # per point, as ever

