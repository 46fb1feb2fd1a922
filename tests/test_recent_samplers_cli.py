"""The recent samplers from the command line: bad inputs refused in one line (exit 2) before any model loads;
the strategy configs validate; their sweep grids plan."""

from __future__ import annotations

import pytest

from decodebench.cli.preflight import add_grid_keys
from decodebench.config import validate
from decodebench.sweep.plan import make_plan
from decodebench.specs import to_specs
from tests.conftest import compose

STRATEGIES = ("p_less", "p_less_norm", "min_k", "adaptive_p")

BAD = [
    (["strategy=p_less", "strategy.p_less=0.3"], "strategy.p_less must be true or false (p-less takes no threshold"),
    (["strategy=p_less", "strategy.p_less=1"], "strategy.p_less must be true or false"),
    (["strategy=p_less_norm", "strategy.p_less_norm=0.5"], "strategy.p_less_norm must be true or false"),
    (["strategy=p_less", "strategy.p_less_threshold=0.2"], "strategy.p_less_threshold"),
    (["strategy=adaptive_p", "strategy.adaptive_target=1.5"], "strategy.adaptive_target must be in [-1, 1]"),
    (["strategy=adaptive_p", "strategy.adaptive_target=-2"], "strategy.adaptive_target must be in [-1, 1]"),
    (["strategy=adaptive_p", "strategy.adaptive_decay=1.0"], "strategy.adaptive_decay must be in [0, 0.99]"),
    (["strategy=adaptive_p", "strategy.mirostat=2"], "strategy.adaptive_target: adaptive-P and mirostat"),
    (["strategy=min_k", "strategy.min_k_tau=-1"], "strategy.min_k_tau must be in [0, inf)"),
    (["strategy=min_k", "strategy.min_k=maybe"], "strategy.min_k"),
]


@pytest.fixture
def loads(monkeypatch) -> list:
    from decodebench import models

    seen: list = []
    real = models.load_model

    def counted(*a, **k):
        seen.append(a)
        return real(*a, **k)

    monkeypatch.setattr(models, "load_model", counted)
    return seen


@pytest.mark.parametrize("argv,want", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(argv, want, loads, tmp_path, monkeypatch, capsys):
    from decodebench.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv + ["logger=none", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], err
    assert "Traceback" not in err and loads == []


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_configs_validate_and_name_their_transform(name):
    spec = validate(to_specs(compose([f"strategy={name}", "model=tiny"])))
    p = spec.params
    assert spec.name == name and p.do_sample
    on = {"p_less": p.p_less, "p_less_norm": p.p_less_norm, "min_k": p.min_k,
          "adaptive_p": p.adaptive_target is not None and p.adaptive_target >= 0}
    assert on[name] and sum(on.values()) == 1


@pytest.mark.parametrize("name", STRATEGIES)
def test_sweep_grids_plan(name):
    plan = make_plan(to_specs(compose(add_grid_keys([f"strategy={name}", f"sweep={name}", "model=tiny"]))))
    assert len(plan.points) > 1 and all(pt.spec.params.do_sample for pt in plan.points)
