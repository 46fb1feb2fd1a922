"""The sweep verb on the tiny model: grid checks, fused == alone, resume, refusing other configs, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from decodebench import models, results, runner
from decodebench.sweep import execute as sweep_exec
from decodebench.cli.verbs import main as cli_main
from decodebench.sweep.plan import make_plan
from decodebench.cli.preflight import add_grid_keys
from decodebench.specs import to_specs
from tests.conftest import compose as _compose

# Full-length rows (min_new_tokens) so the comparison covers every step; 4 prompts x 2 samples per point;
# batch_size 3 splits a point's rows over batches, which the fused run packs 3 x points at a time.
BASE = ["model=tiny", "strategy=topp", "dataset.limit=4", "strategy.max_new_tokens=6", "strategy.min_new_tokens=6",
        "strategy.num_return_sequences=2", "batch_size=3", "logger=none", "progress=false", "scorers=text",
        "scorers.bootstrap.samples=0", "sweep.grid.top_p=[0.5,0.9]", "sweep.grid.temperature=[0.7,1.0]",
        "sweep.leaderboard=false"]  # the leaderboard's plots take seconds: on only where a test reads it
BOARD = "sweep.leaderboard=true"


def compose(args):
    return _compose(add_grid_keys(list(args)))  # as the sweep verb composes: sweep.grid.<new key>=... adds it


def sweep(args, capsys=None):
    """`python -m decodebench sweep ARGS` in-process: (exit code, the last stdout line's JSON or None, stderr)."""
    try:
        cli_main(["sweep", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return code, (json.loads(last) if last.startswith("{") else None), err


def tokens(run_dir) -> list:
    return [(r.prompt_id, r.sample_index, r.token_ids) for r in results.read_generations(run_dir)]


def point_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir())


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: a second OpenMP thread buys little, and on a busy 2-core machine its spin-waits cost
    several times over (as in the test_search_* modules). Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if anything gets a model (bad input must be refused before that)."""

    def boom(*a, **k):
        raise AssertionError("a model was asked for")

    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(runner, "get_model", boom)


def test_plan_points_names_and_groups():
    plan = make_plan(to_specs(compose(BASE + ["sweep.seeds=[0,1]"])))
    assert [p.name for p in plan.points][:3] == ["top_p=0.5,temperature=0.7,seed=0", "top_p=0.5,temperature=0.7,seed=1",
                                                 "top_p=0.5,temperature=1,seed=0"]
    assert len(plan.points) == 8
    p = plan.points[1]
    assert (p.run.strategy["top_p"], p.run.strategy["temperature"], p.run.seed) == (0.5, 0.7, 1)
    assert p.overrides() == ["strategy.top_p=0.5", "strategy.temperature=0.7", "seed=1"]
    assert [len(g) for g in plan.groups(None)] == [8]
    assert [len(g) for g in plan.groups(3)] == [3, 3, 2]
    # a different max_new_tokens is a loop-level setting: such points are never in one group
    plan2 = make_plan(to_specs(compose(BASE + ["sweep.grid.max_new_tokens=[4,6]"])))
    assert sorted(len(g) for g in plan2.groups(None)) == [4, 4]


def test_every_new_strategy_grid_plans():
    """Each default grid of the newer samplers expands into valid points (the table makes them sweepable)."""
    for name in ("top_n_sigma", "xtc", "dry", "mirostat", "tfs", "dynatemp", "smoothing", "top_h", "watermark", "cfg"):
        plan = make_plan(to_specs(compose([f"strategy={name}", f"sweep={name}"])))
        assert len(plan.points) > 1 and all(p.spec.params.do_sample for p in plan.points), name


@pytest.mark.parametrize("args, expect", [
    (["strategy=greedy", "~sweep.grid.top_p", "~sweep.grid.temperature"], "strategy greedy has no grid"),
    (["strategy=greedy", "~sweep.grid.top_p", "~sweep.grid.temperature", "sweep.grid.xtc_probability=[0.5]"],
     "does not sample"),
    (["sweep.grid.top_q=[0.5]"], "did you mean top_p"),
    (["sweep.grid.top_p=[]"], "sweep.grid.top_p has no values"),
    (["sweep.grid.top_p=0.5"], "sweep.grid.top_p must be a list"),
    (["sweep.grid.top_p=[0.5,1.5]"], "top_p must be in (0, 1]"),
    (["sweep.grid.top_p=[0.5,abc]"], "'abc' is not a value of strategy.top_p"),
    (["sweep.grid.top_p=[0.5,0.5]"], "lists 0.5 twice"),
    (["strategy.do_sample=false"], "does not sample"),
    (["sweep.seeds=[]"], "sweep.seeds has no values"),
    (["sweep.fuse=0"], "sweep.fuse must be >= 1"),
    (["-m"], "multirun"),
    (["hydra.run.dir=/tmp/x"], "sweep.dir=PATH"),
    (["--config-dir"], "--config-dir needs a directory"),
    (["strategy=topq"], "did you mean"),
])
def test_bad_input_is_one_line_before_the_model(args, expect, tmp_path, capsys, no_model):
    code, _, err = sweep(BASE + [f"sweep.dir={tmp_path / 's'}"] + args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not (tmp_path / "s").exists()


def test_fused_points_equal_each_point_run_alone(tmp_path, capsys):
    args = BASE + [BOARD, "sweep.seeds=[0,1]", f"sweep.dir={tmp_path / 's'}"]
    code, res, err = sweep(args, capsys)
    assert code == 0, err
    sdir = tmp_path / "s"
    assert len(res["complete"]) == 8 and not res["failed"]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "sweep.json"):
        assert (sdir / name).is_file()
    plan = make_plan(to_specs(compose(BASE + ["sweep.seeds=[0,1]"])))
    info = json.loads((sdir / plan.points[0].name / "run.json").read_text())
    assert len(info["sweep"]["fused_with"]) == 7  # really fused: all 8 points shared batches
    p = plan.points[3]  # run alone from the command line's overrides
    alone = runner.execute(to_specs(compose(args + p.overrides())), tmp_path / "alone")["run_dir"]
    got = tokens(sdir / p.name)
    assert len(got) == 8 and got == tokens(alone)
    assert (sdir / p.name / "config.yaml").read_text() == (Path(alone) / "config.yaml").read_text()
    # the two seeds of a setting differ, so seeds really reach the rows
    assert tokens(sdir / plan.points[0].name) != tokens(sdir / plan.points[1].name)
    # a point's config.yaml, run as it stands, reproduces the point
    from omegaconf import OmegaConf

    p = plan.points[6]
    again = runner.execute(to_specs(OmegaConf.load(sdir / p.name / "config.yaml")), tmp_path / "again")
    assert tokens(again["run_dir"]) == tokens(sdir / p.name)


def test_interrupted_sweep_resumes_without_losing_rows(tmp_path, capsys, monkeypatch):
    sdir = tmp_path / "s"
    real = sweep_exec.generate
    delivered = []

    def interrupted(*a, on_batch=None, **k):
        def hook(idx, outs):
            on_batch(idx, outs)
            delivered.append(len(idx))
            if len(delivered) == 2:
                raise KeyboardInterrupt
        return real(*a, on_batch=hook, **k)

    monkeypatch.setattr(sweep_exec, "generate", interrupted)
    code, _, err = sweep(BASE + [f"sweep.dir={sdir}"], capsys)
    assert code == 130 and f"sweep.dir={sdir}" in err
    dirs = point_dirs(sdir)
    assert len(dirs) == 4 and not any(results.is_complete(d) for d in dirs)
    kept = {d.name: len(sweep_exec.read_partial(d)) for d in dirs}
    assert sum(kept.values()) == sum(delivered) and len(set(kept.values())) == 1  # two fused batches, all points
    with open(dirs[0] / results.PARTIAL, "a") as f:
        f.write('{"prompt_id": "torn')  # a line cut short by a kill
    monkeypatch.setattr(sweep_exec, "generate", real)
    code, res, err = sweep(BASE + [f"sweep.dir={sdir}"], capsys)
    assert code == 0 and len(res["complete"]) == 4, err
    for d in dirs:
        info = json.loads((d / "run.json").read_text())
        assert info["sweep"]["resumed_rows"] == kept[d.name]
        assert not (d / results.PARTIAL).exists()
    fresh = tmp_path / "fresh"
    assert sweep(BASE + [f"sweep.dir={fresh}"], capsys)[0] == 0
    for d in dirs:
        assert tokens(d) == tokens(fresh / d.name)
    # started again once complete: nothing is redone
    stamps = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in dirs}
    code, res, _ = sweep(BASE + [f"sweep.dir={sdir}"], capsys)
    assert code == 0 and res["skipped"] == 4 and not res["complete"]
    assert stamps == {d.name: (d / "metrics.json").stat().st_mtime_ns for d in dirs}
    # killed after a point's generations were closed, before its metrics: only the scoring is redone
    (dirs[1] / "metrics.json").unlink()
    monkeypatch.setattr(sweep_exec, "generate", lambda *a, **k: pytest.fail("rows generated again"))
    code, res, _ = sweep(BASE + [f"sweep.dir={sdir}"], capsys)
    assert code == 0 and res["complete"] == [str(dirs[1])] and tokens(dirs[1]) == tokens(fresh / dirs[1].name)
    assert json.loads((dirs[1] / "run.json").read_text())["sweep"]["resumed_rows"] == 8


def test_a_sweep_dir_of_another_configuration_is_refused(tmp_path, capsys, monkeypatch):
    sdir = tmp_path / "s"
    assert sweep(BASE + [f"sweep.dir={sdir}", "~sweep.grid.temperature"], capsys)[0] == 0
    with monkeypatch.context() as m:  # refused before any model is asked for
        m.setattr(runner, "get_model", lambda *a, **k: pytest.fail("a model was asked for"))
        code, _, err = sweep(BASE + [f"sweep.dir={sdir}", "~sweep.grid.temperature", "strategy.max_new_tokens=5"],
                             capsys)
    assert code == 2 and "different configuration" in err and "strategy.max_new_tokens: 6 there, 5 now" in err
    # the same settings with more grid values: only the new points run
    code, res, err = sweep(BASE + [f"sweep.dir={sdir}", "~sweep.grid.temperature", "sweep.grid.top_p=[0.5,0.9,0.95]"],
                           capsys)
    assert code == 0 and res["skipped"] == 2 and len(res["complete"]) == 1, err
    # a directory holding a plain run is not a sweep
    other = tmp_path / "run"
    (other / "r").mkdir(parents=True)
    (other / "r" / "metrics.json").write_text("{}")
    code, _, err = sweep(BASE + [f"sweep.dir={other}"], capsys)
    assert code == 2 and "not a decodebench sweep" in err


def test_a_failing_point_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    real = sweep_exec.generate

    def oom(model, tok, reqs, *a, **k):
        if any(r.params.top_p == 0.5 and r.params.temperature == 1.0 for r in reqs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\n(more detail)")
        return real(model, tok, reqs, *a, **k)

    monkeypatch.setattr(sweep_exec, "generate", oom)
    sdir = tmp_path / "s"
    code, res, err = sweep(BASE + [BOARD, f"sweep.dir={sdir}"], capsys)
    assert code == 1
    assert len(res["complete"]) == 3 and [f["point"] for f in res["failed"]] == ["top_p=0.5,temperature=1,seed=0"]
    e = json.loads((sdir / "top_p=0.5,temperature=1,seed=0" / "error.json").read_text())
    assert e["error"].startswith("RuntimeError: CUDA out of memory") and "\n" not in e["error"]
    assert e["point"] == {"strategy": "topp", "top_p": 0.5, "temperature": 1.0, "seed": 0}
    with open(sdir / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["status"] for r in rows) == ["failed", "ok", "ok", "ok"]
    assert "out of memory" in (sdir / "leaderboard.md").read_text()
    # started again without the failure: the failed point is redone, the rest kept
    monkeypatch.setattr(sweep_exec, "generate", real)
    code, res, _ = sweep(BASE + [f"sweep.dir={sdir}"], capsys)
    assert code == 0 and res["skipped"] == 3 and len(res["complete"]) == 1
    assert not (sdir / "top_p=0.5,temperature=1,seed=0" / "error.json").exists()


def test_wandb_one_run_per_point_grouped_and_the_leaderboard_table(tmp_path, capsys, monkeypatch):
    import sys
    import types

    inits, logged = [], []

    class FakeRun:
        def __init__(self, kw):
            self.kw, self.summary, self.dir = kw, {}, str(Path(kw["dir"]) / "wandb" / "run" / "files")

        def log(self, d):
            logged.append((self.kw["name"], sorted(d)))

        def finish(self):
            pass

    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun(kw),
                                 Table=lambda columns, data: ("table", columns, data))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sdir = tmp_path / "s"
    code, _, err = sweep([a for a in BASE if a != "logger=none"] + [BOARD, f"sweep.dir={sdir}",
                                                                     "~sweep.grid.temperature"], capsys)
    assert code == 0, err
    points = [kw for kw in inits if kw["job_type"] == "topp"]
    assert [kw["name"] for kw in points] == ["topp:top_p=0.5,seed=0", "topp:top_p=0.9,seed=0"]
    assert {kw["group"] for kw in inits} == {"sweep-s"} and all(kw["mode"] == "offline" for kw in inits)
    board = [kw for kw in inits if kw["job_type"] == "topp-leaderboard"]
    assert len(board) == 1 and ("topp:leaderboard", ["leaderboard"]) in logged


def test_report_over_directories_without_results_is_refused(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        cli_main(["report", str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no runs found" in err[0]
