"""A researcher's own configs, kept outside decodebench and added with Hydra's search path (README, "Your own
configs"); the sweep verb's directory given as Hydra spells it; each run or sweep prepared once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from decodebench import results, runner
from decodebench.cli.preflight import compose_checked
from tests.test_sweep import BASE, one_thread, sweep  # noqa: F401  (one_thread: autouse)

TINY = ["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=4", "logger=none", "scorers=text",
        "progress=false", "scorers.bootstrap.samples=0"]


def my_conf(root: Path) -> Path:
    """The README's example: a strategy, its sweep grid and a dataset of one's own."""
    (root / "strategy").mkdir(parents=True)
    (root / "sweep").mkdir()
    (root / "dataset").mkdir()
    (root / "strategy" / "my_topp.yaml").write_text("name: my_topp\ndo_sample: true\ntop_p: 0.6\ntemperature: 0.9\n")
    (root / "sweep" / "my_topp.yaml").write_text("grid:\n  top_p: [0.6, 0.7]\nseeds: [0]\n")
    (root / "my_prompts.jsonl").write_text("".join(json.dumps({"prompt": f"My prompt {i}"}) + "\n" for i in range(3)))
    (root / "dataset" / "mine.yaml").write_text(f"name: file\npath: {root / 'my_prompts.jsonl'}\n")
    return root


@pytest.mark.parametrize("how", ["searchpath", "config-dir"])
def test_run_with_my_strategy_and_dataset(how, tmp_path, monkeypatch, capsys):
    from decodebench.cli.verbs import main

    monkeypatch.chdir(tmp_path)
    my_conf(tmp_path / "my_conf")
    add = ["hydra.searchpath=[file://my_conf]"] if how == "searchpath" else ["--config-dir", "my_conf"]
    monkeypatch.setattr(sys, "argv", ["decodebench"])  # the verb hands Hydra its own sys.argv; restored after
    calls = []
    real = runner.prepare
    monkeypatch.setattr(runner, "prepare", lambda cfg, **kw: calls.append(1) or real(cfg, **kw))
    main([*add, "strategy=my_topp", "dataset=mine", *TINY, "hydra.run.dir=out"])
    assert len(calls) == 1  # the preflight's RunPlan is the run's: the dataset is loaded and checked once
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["strategy"]["name"] == "my_topp" and info["strategy"]["params"]["top_p"] == 0.6
    assert info["num_prompts"] == 2  # dataset.limit=2 of my 3 prompts
    assert [r.prompt for r in results.read_generations(tmp_path / "out")][0] == "My prompt 0"


def test_own_config_names_are_checked_before_hydra(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    my_conf(tmp_path / "my_conf")
    mine = ["hydra.searchpath=[file://my_conf]"]
    _, err = compose_checked([*mine, "strategy=my_topq", *TINY])
    assert err.startswith("unknown strategy (set strategy=<name>) 'my_topq'; did you mean 'my_topp'")
    _, err = compose_checked(["hydra.searchpath=[file://no_such_dir]", "strategy=my_topp", *TINY])
    assert err.startswith("hydra.searchpath: config directory no_such_dir does not exist")
    cfg, err = compose_checked([*mine, "strategy=my_topp", *TINY])
    assert err is None and cfg.sweep.grid.top_p == [0.6, 0.7]  # my grid is composed for my strategy
    (tmp_path / "more" / "model").mkdir(parents=True)
    (tmp_path / "more" / "model" / "small.yaml").write_text("name_or_path: tiny-random\n")
    cfg, err = compose_checked([*mine, "--config-dir", "more", "strategy=my_topp", "model=small", *TINY[1:]])
    assert err is None and cfg.model.name_or_path == "tiny-random"  # both ways at once: both dirs are seen


def test_sweep_with_my_grid_in_hydra_sweep_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    my_conf(tmp_path / "my_conf")
    calls = []
    real = runner.prepare
    monkeypatch.setattr(runner, "prepare", lambda cfg, **kw: calls.append(1) or real(cfg, **kw))
    code, res, err = sweep(["--config-dir", "my_conf", "strategy=my_topp", *TINY, "sweep.leaderboard=false",
                            f"hydra.sweep.dir={tmp_path / 'grid'}"], capsys)
    assert code == 0, err
    assert res["sweep_dir"] == str(tmp_path / "grid") and res["points"] == 2
    assert sorted(p.name for p in (tmp_path / "grid").iterdir() if p.is_dir()) == \
        ["top_p=0.6,seed=0", "top_p=0.7,seed=0"]
    assert len(calls) == 1  # checked and planned once, by the preflight; the sweep reuses it


def test_sweep_dir_given_twice_must_agree(tmp_path, capsys):
    code, _, err = sweep(BASE + [f"sweep.dir={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 'b'}"], capsys)
    assert code == 2 and err.startswith("error: sweep: sweep.dir=") and "name two directories" in err
    code, res, err = sweep(BASE + ["sweep.grid.top_p=[0.5]", "sweep.grid.temperature=[1.0]",
                                   f"sweep.dir={tmp_path / 'a'}", f"hydra.sweep.dir={tmp_path / 'a'}"], capsys)
    assert code == 0 and res["sweep_dir"] == str(tmp_path / "a"), err
