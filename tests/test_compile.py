"""`compile=true`: the compiled decode step gives the same tokens as the eager one; compile time is
reported apart; a compiler failure falls back to eager, said once."""

from __future__ import annotations

import logging

import pytest

from decodebench.decoding.engine import compiled
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy


def reqs_for(tok, spec, n=6):
    return [Request(prompt_id=str(i), prompt_ids=tok("x" * (i + 1))["input_ids"], params=spec.params, seed=2)
            for i in range(n)]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_step_gives_the_eager_tokens(tiny, backend):
    model, tok = tiny
    spec = build_strategy({"name": "topk", "do_sample": True, "top_k": 10, "max_new_tokens": 12})
    reqs = reqs_for(tok, spec)
    eager, _ = generate(model, tok, reqs, spec, batch_size=3)
    comp, stats = generate(model, tok, reqs, spec, batch_size=3, compile=backend)
    assert [o.token_ids for o in comp] == [o.token_ids for o in eager]
    assert stats.compile_s > 0 and stats.decode_s > 0


def test_compile_failure_falls_back_to_eager_once(tiny, monkeypatch, caplog):
    model, tok = tiny
    spec = build_strategy({"name": "greedy", "max_new_tokens": 6})
    reqs = reqs_for(tok, spec, n=3)
    eager, _ = generate(model, tok, reqs, spec, batch_size=3)

    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(compiled.torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="decodebench"):
        comp, _ = generate(model, tok, reqs, spec, batch_size=3, compile=True)
    assert [o.token_ids for o in comp] == [o.token_ids for o in eager]
    assert sum("running the step eagerly" in r.message for r in caplog.records) == 1


def test_compile_without_a_compiler_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="compile: torch.compile on CPU needs a C\\+\\+ compiler"):
        compiled.check_compile("cpu")
