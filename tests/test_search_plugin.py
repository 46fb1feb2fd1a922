"""A user's own search method from a plugin module (the README's worked example, tests/plugins/my_decoder.py),
driven from the command line: its top-k samples equal the engine's `strategy.top_k` sampling chain on the
same seeds, and its greedy variant equals `strategy=greedy`."""

from __future__ import annotations

import subprocess
import sys

from decodebench import results
from decodebench.cli.entry import run
from decodebench.cli.preflight import compose_checked
from tests.conftest import ROOT, compose

COMMON = ["model=tiny", "dataset.limit=3", "strategy.max_new_tokens=8", "logger=none", "scorers=text",
          "progress=false", "batch_size=4", "device=cpu", "dtype=float32"]
PLUGIN = ["plugins=[tests.plugins.my_decoder]", "strategy.method=my_topk"]


def tokens(run_dir) -> list[list[int]]:
    return [r.token_ids for r in results.read_generations(run_dir)]


def engine_run(tmp_path, name, args) -> list[list[int]]:
    return tokens(run(compose(COMMON + args), str(tmp_path / name))["run_dir"])


def test_plugin_decoder_from_the_cli_equals_the_engine(tmp_path):
    out = tmp_path / "plugin"
    p = subprocess.run([sys.executable, "-m", "decodebench", *COMMON, *PLUGIN, "strategy=sample", "strategy.top_k=5",
                        f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    sampled = tokens(out)
    assert len(sampled) == 3 and all(len(t) == 8 for t in sampled)
    # the engine's own top-k chain and sampler, with the same seeds: the same tokens
    assert sampled == engine_run(tmp_path, "topk", ["strategy=sample", "strategy.top_k=5"])
    greedy = engine_run(tmp_path, "greedy", ["strategy=greedy"])
    assert engine_run(tmp_path, "plugin_greedy", [*PLUGIN, "strategy=sample", "strategy.do_sample=false"]) == greedy
    assert sampled != greedy


def test_unknown_method_says_did_you_mean_before_the_model_loads():
    cfg, err = compose_checked([*PLUGIN[:1], "strategy=sample", "strategy.method=my_topkk",
                                "model.name_or_path=/no/such/model"])  # the method is refused first
    assert cfg is None and "did you mean 'my_topk'" in err and "\n" not in err, err
