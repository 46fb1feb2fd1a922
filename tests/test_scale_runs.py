"""A study's loads and memory: scoring models load once per process, a scoring model without a usable
tokenizer is a one-line error before anything loads, and peak_memory_mb is the run's own peak."""

from __future__ import annotations

import pytest

from decodebench import models, run_state, runner
from decodebench.__main__ import main as cli_main

BASE = ["model=tiny", "strategy=topp", "dataset.limit=3", "strategy.max_new_tokens=4", "logger=none",
        "progress=false", "scorers.bootstrap.samples=0", "scorers.names=[perplexity]"]


@pytest.fixture(scope="module")
def scorer_dir(tmp_path_factory):
    model, tok = models.tiny_model(seed=1)
    path = tmp_path_factory.mktemp("scorer")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def cli(args):
    try:
        cli_main(args)
    except SystemExit as e:
        return e.code or 0
    return 0


def test_sweep_points_and_runs_load_the_scoring_model_once(tmp_path, scorer_dir, capsys):
    run_state._SCORING_CACHE.clear()
    before = len(models.LOADS)
    args = [*BASE, f"scorers.perplexity.model={scorer_dir}"]
    assert cli(["sweep", *args, "sweep.grid.top_p=[0.5,0.9]", "sweep.leaderboard=false",
                f"sweep.dir={tmp_path / 's'}"]) == 0
    assert cli(["sweep", *args, "sweep.grid.top_p=[0.7]", "sweep.leaderboard=false",
                f"sweep.dir={tmp_path / 't'}"]) == 0
    loads = [name for name, *_ in models.LOADS[before:]]
    assert loads.count(scorer_dir) == 1, loads


def test_a_scoring_model_whose_tokenizer_cannot_load_is_one_line_before_any_load(tmp_path, scorer_dir, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(open(f"{scorer_dir}/config.json").read())  # weights' config, no tokenizer
    before = len(models.LOADS)
    code = cli([*BASE, f"scorers.perplexity.model={broken}", f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(models.LOADS) == before
    assert err.startswith(f"error: scorers.perplexity.model={broken}: its tokenizer cannot be loaded")
    assert len(err.splitlines()) == 1


def test_peak_memory_is_the_runs_own():
    # anonymous mappings, so each buffer is fresh pages whatever malloc keeps (the engine keeps freed heap
    # on a CPU: decoding/engine/host_memory.py, and an earlier test in this process has generated)
    import mmap

    def touched(n: int) -> mmap.mmap:
        m = mmap.mmap(-1, n)
        for i in range(0, n, 4096):
            m[i] = 120  # touch every page
        return m

    big = touched(300 * 2**20)  # an earlier run's peak, still the process's lifetime maximum
    big.close()
    mark = runner.MemoryMark("cpu")
    if not mark.reset:
        pytest.skip("/proc/self/clear_refs cannot be written here")
    run = touched(80 * 2**20)
    peak = mark.peak_mb()
    run.close()
    assert 70 <= peak < 250


def test_perplexity_under_the_generating_model_reuses_generation_log_probs(tmp_path, monkeypatch, capsys):
    import json

    from decodebench.scorers import lm, resolve_scorers

    args = [*BASE, "strategy.min_new_tokens=4", "scorers.names=[perplexity,coherence]",
            "scorers.coherence.bos=tokenizer"]
    real = lm.continuation_logprobs
    monkeypatch.setattr(lm, "continuation_logprobs", lambda *x, **k: pytest.fail("a scoring forward ran"))
    assert cli([*args, f"hydra.run.dir={tmp_path / 'a'}"]) == 0
    monkeypatch.setattr(lm, "continuation_logprobs", real)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    recs = runner.results.read_generations(tmp_path / "a")
    assert all(r.telemetry is None for r in recs)  # kept in memory only: the user recorded nothing
    # the same records scored by a forward of the same model
    model, tok = runner.get_model(models.ModelConfig(name_or_path="tiny-random"), "cpu", "float32")
    plan = resolve_scorers({"names": ["perplexity", "coherence"], "bootstrap": {"samples": 0},
                            "coherence": {"bos": "tokenizer"}})
    b = plan.score(recs, model=model, tokenizer=tok, progress=False)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)
    assert a["coherence"] == pytest.approx(b["coherence"], rel=1e-4)


@pytest.mark.parametrize("arg, needle", [("model.device_map=cuda:5", "model.device_map=cuda:5"),
                                         ("model.attn_implementation=flash_attention_2", "flash"),
                                         ("model.quantization=8bit", "model.quantization=8bit")])
def test_load_options_the_machine_cannot_serve_exit_2_before_any_load(arg, needle, tmp_path, capsys):
    import torch

    if "cuda" in arg and torch.cuda.device_count() > 5:
        pytest.skip("this machine has 6 GPUs")
    before = len(models.LOADS)
    code = cli([*BASE, arg, f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(models.LOADS) == before
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
