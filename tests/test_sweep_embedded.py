"""The embedded model (SmolLM2-135M): a fused sweep's points equal the same points run alone, token for token."""

from __future__ import annotations

import json
import sys

from decodebench import results, runner
from decodebench.cli.verbs import main as cli_main
from decodebench.cli.preflight import add_grid_keys
from decodebench.specs import to_specs
from tests.conftest import compose
from tests.test_sweep import one_thread  # noqa: F401  (autouse: no OpenMP spin-waits on a busy machine)

ARGS = ["strategy=topp", "dataset.limit=2", "strategy.max_new_tokens=6", "logger=none", "progress=false",
        "scorers.names=[gen_length,distinct]", "scorers.bootstrap.samples=0", "sweep.grid.top_p=[0.8,0.95]",
        "sweep.grid.temperature=[1.0]", "sweep.leaderboard=false"]


def test_fused_sweep_equals_points_alone_on_the_embedded_model(tmp_path, monkeypatch, embedded):
    monkeypatch.setattr(runner, "get_model", lambda *a, **k: embedded)  # the session's loaded copy
    args = ARGS + [f"sweep.dir={tmp_path / 's'}"]
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    cli_main(["sweep", *args])
    for name, ov in (("top_p=0.8,temperature=1,seed=0", ["strategy.top_p=0.8"]),
                     ("top_p=0.95,temperature=1,seed=0", ["strategy.top_p=0.95"])):
        point = tmp_path / "s" / name
        assert json.loads((point / "run.json").read_text())["sweep"]["fused_with"]
        alone = runner.execute(to_specs(compose(add_grid_keys(args + ov + ["strategy.temperature=1.0", "seed=0"]))),
                               tmp_path / f"alone-{name}")["run_dir"]
        got = [r.token_ids for r in results.read_generations(point)]
        assert len(got) == 2 and all(got) and got == [r.token_ids for r in results.read_generations(alone)]
