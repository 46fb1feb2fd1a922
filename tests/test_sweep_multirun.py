"""Hydra multirun beside the sweep verb: the basic launcher reuses the loaded model across jobs, grids from
`hydra.sweeper.params` in a config file, Hydra's sweep directory layout, submitit's local executor, and the
launcher presets in conf/hydra/launcher/."""

from __future__ import annotations

import sys

import pytest

from decodebench.config import conf_dir
from decodebench import models, results, run_state, runner
from decodebench.cli.verbs import main as cli_main
from tests.test_sweep import one_thread  # noqa: F401  (autouse: one OpenMP thread for tiny matrices)

TINY = ["model=tiny", "strategy.max_new_tokens=4", "dataset.limit=2", "logger=none", "progress=false",
        "scorers.names=[gen_length,distinct]", "scorers.bootstrap.samples=0"]
EXPERIMENT = """# @package _global_
hydra:
  sweeper:
    params:
      strategy.top_p: 0.8,0.9
"""


def multirun(flags, overrides, monkeypatch):
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    cli_main([*flags, "-m", *overrides])


def job_dirs(sweep_dir):
    return sorted(d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def test_multirun_jobs_in_one_process_load_the_model_once(tmp_path, monkeypatch):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "grid.yaml").write_text(EXPERIMENT)
    loads = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    run_state._MODEL_CACHE.clear()
    out = tmp_path / "multi"
    # a command-line sweep (strategy) times a config-file sweep (hydra.sweeper.params): 4 jobs
    multirun(["--config-dir", str(tmp_path / "conf")],
             TINY + ["+experiment=grid", "strategy=topp,topk", f"hydra.sweep.dir={out}"], monkeypatch)
    assert len(loads) == 1
    assert (out / "multirun.yaml").is_file()
    assert all((out / f"leaderboard.{x}").is_file() for x in ("md", "csv", "html"))  # the Hydra callback
    dirs = job_dirs(out)
    assert [d.name.split("-", 1)[0] for d in dirs] == ["0", "1", "2", "3"]
    assert all(results.is_complete(d) and (d / ".hydra" / "config.yaml").is_file() for d in dirs)
    combos = {(d.name.split("strategy.top_p=")[1].split(",")[0], d.name.rsplit("strategy=", 1)[1]) for d in dirs}
    assert combos == {("0.8", "topp"), ("0.9", "topp"), ("0.8", "topk"), ("0.9", "topk")}


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher"),
                                              ("parallel", "JoblibLauncher")])
def test_launcher_presets_compose(launcher, target):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decodebench.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.slow
def test_multirun_through_submitit_local_executor(tmp_path, monkeypatch):
    """Each job a subprocess, submitted and collected by submitit as on SLURM."""
    out = tmp_path / "submitit"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' processes, like this one (one_thread)
    multirun([], TINY + ["hydra/launcher=local", "strategy=topp", "strategy.top_p=0.8,0.9", f"hydra.sweep.dir={out}"],
             monkeypatch)
    dirs = job_dirs(out)
    assert len(dirs) == 2 and all(results.is_complete(d) for d in dirs)
    assert [results.read_generations(d)[0].prompt_id for d in dirs] == ["story-001"] * 2
    assert (out / ".submitit").is_dir()
