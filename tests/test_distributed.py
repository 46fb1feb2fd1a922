"""Data parallel under torchrun: 2 CPU processes (gloo) give the 1-process tokens, for a run and a sweep;
a failing rank fails the run with its error and leaves no complete-looking run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from decodebench import distributed, results
from decodebench.decoding.engine.batch import Request
from tests.conftest import ROOT, compose

# full-length rows so every step is compared; 5 prompts over 2 ranks: uneven shards
ARGS = ["model=tiny", "strategy=topp", "dataset.limit=5", "strategy.max_new_tokens=6", "strategy.min_new_tokens=6",
        "strategy.num_return_sequences=2", "batch_size=3", "logger=none", "scorers=text",
        "scorers.bootstrap.samples=0", "progress=false"]


def torchrun(args, cwd, extra_path=""):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), extra_path) if p),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "decodebench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def tokens(run_dir):
    return [(r.prompt_id, r.sample_index, r.token_ids) for r in results.read_generations(run_dir)]


def test_shards_are_whole_prompts_in_order():
    reqs = [Request(prompt_id=p, prompt_ids=[1], sample_index=s) for p in "abcde" for s in range(2)]
    shards = distributed.shard(reqs, 2)
    assert sum(shards, []) == list(range(10))
    assert all(len({reqs[i].prompt_id for i in s} & {reqs[i].prompt_id for i in t}) == 0
               for s, t in [shards])
    assert distributed.shard(reqs[:2], 3) == [[0, 1], [], []]  # more ranks than prompts: idle ranks


def test_two_gloo_ranks_equal_one_process(tmp_path):
    from decodebench.cli.entry import run

    one = run(compose(ARGS), str(tmp_path / "one"))["run_dir"]
    p = torchrun(ARGS + [f"hydra.run.dir={tmp_path / 'two'}"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert results.is_complete(tmp_path / "two")
    assert tokens(tmp_path / "two") == tokens(one)
    info = json.loads((tmp_path / "two" / results.RUN_INFO).read_text())
    assert info["num_rows"] == 10
    assert json.loads((tmp_path / "two" / results.METRICS).read_text())["generated_tokens"] == 60
    assert not (tmp_path / "outputs").exists()  # the worker made no run directory of its own


def test_two_gloo_ranks_equal_one_process_for_a_sweep(tmp_path, capsys):
    from decodebench.__main__ import main as cli_main

    grid = ["sweep.grid.top_p=[0.5,0.9]", "sweep.leaderboard=false"]
    try:
        cli_main(["sweep", *ARGS, *grid, f"sweep.dir={tmp_path / 'one'}"])
    except SystemExit as e:
        assert e.code in (0, None)
    p = torchrun(["sweep", *ARGS, *grid, f"sweep.dir={tmp_path / 'two'}"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    points = sorted(d.name for d in (tmp_path / "one").iterdir() if d.is_dir())
    assert len(points) == 4  # top_p x the default temperatures
    for name in points:
        assert results.is_complete(tmp_path / "two" / name)
        assert tokens(tmp_path / "two" / name) == tokens(tmp_path / "one" / name)


FAILING = '''
import os
from decodebench.decoding import register_transform

@register_transform("fail_on_rank_1", params=("fail_on_rank_1",), neutral=(-1.0,))
def fail_on_rank_1(logits, fail_on_rank_1):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank one broke")
    return logits
'''


def test_a_failing_rank_fails_the_run_with_its_error(tmp_path):
    (tmp_path / "failing_plugin.py").write_text(FAILING)
    p = torchrun(ARGS + ["plugins=[failing_plugin]", "strategy.extra.fail_on_rank_1=1",
                         f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, extra_path=str(tmp_path))
    assert p.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: rank one broke" in p.stderr
    assert not results.is_complete(tmp_path / "run")
