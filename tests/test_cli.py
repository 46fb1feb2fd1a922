"""End to end: the CLI on the embedded model; results on disk; W&B offline; the machine-readable line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from decodebench import results
from decodebench.cli.entry import run
from tests.conftest import ROOT, compose
from tests.test_engine import hf_greedy

RECORD_KEYS = {"prompt_id", "prompt", "prompt_token_ids", "sample_index", "text", "token_ids", "num_tokens",
               "finish_reason", "reference"}


def test_greedy_run_matches_generate_token_for_token(tmp_path, embedded):
    cfg = compose(["strategy=greedy", "dataset.limit=6", "strategy.max_new_tokens=24", "logger=none",
                   "device=cpu", "dtype=float32", "batch_size=4", "progress=false"])
    res = run(cfg, str(tmp_path / "run"))
    run_dir = Path(res["run_dir"])
    recs = results.read_generations(run_dir)
    assert len(recs) == 6 and all(RECORD_KEYS <= set(r.to_json()) for r in recs)
    model, tok = embedded
    ref = hf_greedy(model, tok, [r.prompt for r in recs], 24)
    assert [r.token_ids for r in recs] == ref
    for r in recs:
        assert r.prompt_token_ids == tok(r.prompt)["input_ids"]
        assert r.num_tokens == len(r.token_ids) and r.finish_reason in ("eos", "length")
        assert r.text == tok.decode(r.token_ids, skip_special_tokens=True)
    m = results.read_metrics(run_dir)
    for k in ("tokens_per_s", "wall_time_s", "distinct_2", "distinct_3", "distinct_4", "rep_2", "rep_3",
              "rep_4", "perplexity", "time_to_first_token_s", "forward_passes_per_token", "peak_memory_mb"):
        assert isinstance(m[k], float), k
    assert m["generated_tokens"] == sum(r.num_tokens for r in recs)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file()
    assert not (run_dir / results.PARTIAL).exists()


def test_cli_subprocess_writes_results_and_wandb_offline(tmp_path):
    out = tmp_path / "x"
    p = subprocess.run([sys.executable, "-m", "decodebench", "model=tiny", "strategy=topp", "dataset.limit=3",
                        "strategy.max_new_tokens=5", "scorers=text", "progress=false", f"hydra.run.dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["run_dir"] == str(out) and "diversity" in last["metrics"]
    # a person reads the table on stderr; stdout is for programs
    assert f"results: {out}  (generations.jsonl, metrics.json)" in p.stderr.splitlines()
    speed = [ln.split()[2] for ln in p.stderr.splitlines() if ln.startswith("  generation speed ")]
    assert speed == [f"{last['metrics']['tokens_per_s']:.4g}"] and "generation speed" not in p.stdout
    assert results.is_complete(out)
    assert list((out / "wandb").glob("offline-run-*")), "the offline W&B run is under the run directory"
    assert (out / ".hydra" / "config.yaml").is_file()


def test_scoring_failure_keeps_generations(tmp_path, monkeypatch):
    from decodebench.scorers import plan

    def boom(self, *a, **k):
        raise RuntimeError("scorer crashed")

    monkeypatch.setattr(plan.ScorerPlan, "score", boom)
    cfg = compose(["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=3", "logger=none", "progress=false"])
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="scorer crashed"):
        run(cfg, str(out))
    assert len(results.read_generations(out)) == 2
    assert (out / "metrics.partial.json").is_file() and not results.is_complete(out)
    kept = json.loads((out / "metrics.partial.json").read_text())
    assert kept["generated_tokens"] == sum(r.num_tokens for r in results.read_generations(out)) > 0


def test_wandb_failure_never_costs_results(tmp_path, monkeypatch):
    import wandb

    def broken(*a, **k):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose(["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=3", "progress=false", "scorers=text"])
    res = run(cfg, str(tmp_path / "run"))
    assert res["wandb_dir"] is None and results.is_complete(res["run_dir"])


def test_samples_do_not_depend_on_batch_size(tmp_path, embedded):
    common = ["strategy=topp", "strategy.top_p=0.9", "seed=1", "dataset.limit=8", "strategy.max_new_tokens=20",
              "logger=none", "device=cpu", "dtype=float32", "progress=false", "scorers=text"]
    a = results.read_generations(run(compose(common + ["batch_size=8"]), str(tmp_path / "b8"))["run_dir"])
    b = results.read_generations(run(compose(common + ["batch_size=3"]), str(tmp_path / "b3"))["run_dir"])
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert len({tuple(r.token_ids) for r in a}) == len(a)  # real samples, not one repeated output


def test_num_return_sequences_gives_indexed_distinct_samples(tmp_path):
    cfg = compose(["model=tiny", "strategy=sample", "strategy.num_return_sequences=3", "dataset.limit=2",
                   "strategy.max_new_tokens=6", "logger=none", "progress=false", "scorers=text"])
    recs = results.read_generations(run(cfg, str(tmp_path / "r"))["run_dir"])
    assert [(r.prompt_id, r.sample_index) for r in recs] == [
        (recs[0].prompt_id, 0), (recs[0].prompt_id, 1), (recs[0].prompt_id, 2),
        (recs[3].prompt_id, 0), (recs[3].prompt_id, 1), (recs[3].prompt_id, 2)]
    assert len({tuple(r.token_ids) for r in recs[:3]}) == 3
