"""task=<lm-eval task> in runs, multiruns and sweeps; bad input refused in one line before the model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from decodebench import results, runner  # noqa: E402
from decodebench.tasks.config import expand_overrides  # noqa: E402
from decodebench.specs import to_specs  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.test_sweep import no_model, one_thread, sweep  # noqa: E402,F401

TINY = ["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=4", "logger=none", "progress=false",
        "scorers.names=[gen_length,distinct]", "scorers.bootstrap.samples=0"]
ARITH = "task/decodebench_arith"

MC_TASK = """task: my_choice
dataset_path: json
dataset_kwargs: {data_files: {test: data.jsonl}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{q}}"
doc_to_choice: ["a", "b"]
doc_to_target: 0
metric_list: [{metric: acc}]
"""


def run_cli(args, capsys):
    from decodebench.__main__ import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_task_name_becomes_the_task_group_and_its_name():
    assert expand_overrides(["task=gsm8k", "seed=1"]) == ["task=lm_eval", "task.name=gsm8k", "seed=1"]
    assert expand_overrides(["task=a,b"]) == ["task=lm_eval", "task.name=a,b"]
    assert expand_overrides(["task=lm_eval", "task.name=x"]) == ["task=lm_eval", "task.name=x"]


@pytest.mark.parametrize("args, expect", [
    (["task=decodebench_arth"], "did you mean 'decodebench_arith'"),
    (["task=decodebench_arith", "task.num_samples=0"], "task.num_samples must be >= 1"),
    (["task=decodebench_arith", "task.limit=0"], "task.limit must be >= 1"),
    (["task=decodebench_arith", "task.pass_k=[3]"], "task.pass_k"),
    (["task=decodebench_pycode"], "task.allow_code_execution=true"),
    (["task=gsm8k"], "task.include_path"),
    (["task=decodebench_arith", "task.include_path=/no/such/dir"], "task.include_path: no such directory"),
])
def test_bad_input_is_one_line_before_the_model(args, expect, tmp_path, capsys, no_model):
    code, _, err = run_cli(TINY + [f"hydra.run.dir={tmp_path / 'r'}"] + args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not (tmp_path / "r").exists()


def test_hub_task_offline_names_the_task(monkeypatch, capsys, no_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(TINY + ["task=gsm8k"], capsys)
    assert code == 2 and "task 'gsm8k'" in err and "Hub" in err and "task.include_path=DIR" in err


def test_a_log_likelihood_task_with_a_sampling_strategy_is_refused(tmp_path, capsys, no_model):
    (tmp_path / "my_choice.yaml").write_text(MC_TASK)
    code, _, err = run_cli(TINY + ["strategy=topp", "task=my_choice", f"task.include_path={tmp_path}"], capsys)
    assert code == 2 and "scored by log-likelihood (multiple_choice)" in err and "strategy=greedy" in err
    from tests.conftest import compose

    cfg = compose(expand_overrides(TINY + ["task=my_choice", f"task.include_path={tmp_path}"]))
    assert runner.prepare(to_specs(cfg))["task"].output_types == {"my_choice": "multiple_choice"}  # greedy: allowed


def test_plain_run_adds_task_metrics_and_maj_at_n(tmp_path, capsys):
    code, out, err = run_cli(TINY + ["strategy=topp", "task=decodebench_arith", "task.limit=3",
                                     "task.num_samples=3", f"hydra.run.dir={tmp_path / 'r'}"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "r" / results.METRICS).read_text())
    for filt in ("strict-match", "flexible-extract"):
        for name in (f"{ARITH}/exact_match/{filt}", f"{ARITH}/maj@3/exact_match/{filt}"):
            assert 0.0 <= m[name] <= 1.0 and f"{name}_stderr" in m and f"{name}_ci_low" in m
    assert "distinct_1" in m  # the run's own scorers are still there
    rows = [json.loads(x) for x in (tmp_path / "r" / "task_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 and all(len(r["resps"][0]) == 3 for r in rows)
    assert json.loads(out.strip().splitlines()[-1])["metrics"][f"{ARITH}/exact_match/strict-match"] == \
        m[f"{ARITH}/exact_match/strict-match"]


def test_sweep_points_carry_task_columns_to_the_leaderboard(tmp_path, capsys):
    args = TINY + ["strategy=topp", "sweep.grid.top_p=[0.5,0.9]", "~sweep.grid.temperature", "task=decodebench_arith",
                   "task.limit=2", "task.num_samples=2", f"sweep.dir={tmp_path / 's'}"]
    code, res, err = sweep(expand_overrides(args), capsys)
    assert code == 0, err
    assert len(res["complete"]) == 2
    board = (tmp_path / "s" / "leaderboard.md").read_text()
    assert f"{ARITH}/exact_match/strict-match ↑" in board and f"{ARITH}/maj@2/exact_match/strict-match ↑" in board
    assert "_stderr" not in board.split("## Sample generations")[0]  # a companion, not a column


def test_multirun_jobs_each_score_the_task(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    out = tmp_path / "multi"
    code, _, err = run_cli(["-m"] + TINY + ["strategy=greedy,topp", "task=decodebench_arith", "task.limit=2",
                                   f"hydra.sweep.dir={out}"], capsys)
    assert code == 0, err
    jobs = sorted(d for d in out.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(jobs) == 2
    for d in jobs:
        assert f"{ARITH}/exact_match/strict-match" in json.loads((d / results.METRICS).read_text())


def test_lm_eval_cli_runs_decodebench_as_a_model(tmp_path):
    """The command line path: lm-eval's own CLI, `--model decodebench`, our local task."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "decodebench.tasks.lm_eval_cli", "run", "--model", "decodebench",
                           "--model_args", "model=tiny-random,strategy=topp,top_p=0.9", "--tasks", "decodebench_arith",
                           "--limit", "2", "--output_path", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "decodebench_arith" in proc.stdout and "exact_match" in proc.stdout
    saved = list(tmp_path.rglob("results_*.json"))
    assert saved and "exact_match,strict-match" in json.loads(saved[0].read_text())["results"]["decodebench_arith"]


def test_greedy_with_several_samples_is_said_once(caplog):
    import logging

    from decodebench.tasks import config as task_config
    from tests.conftest import compose

    task_config._WARNED.clear()
    cfg = compose(expand_overrides(TINY + ["task=decodebench_arith", "task.num_samples=3"]))
    with caplog.at_level(logging.WARNING, logger="decodebench"):
        runner.prepare(to_specs(cfg))
        runner.prepare(to_specs(cfg))  # preflight, then the run itself
    said = [r for r in caplog.records if "greedy samples are all the same" in r.getMessage()]
    assert len(said) == 1
