"""The embedded model (SmolLM2-135M): the shipped open_ended study, trimmed to a few methods, writes its
leaderboard, and its fused points equal the same points run alone, token for token."""

from __future__ import annotations

import json
import sys

from decodebench import results, runner
from decodebench.cli.verbs import main as cli_main
from decodebench.specs import to_specs
from tests.conftest import compose
from tests.test_sweep import one_thread  # noqa: F401  (autouse: no OpenMP spin-waits on a busy machine)

SHARED = ["dataset.limit=4", "strategy.max_new_tokens=6", "logger=none", "progress=false",
          "scorers.names=[gen_length,distinct,rep_w]", "scorers.bootstrap.samples=0"]
DROP = ["~study.methods.contrastive", "~study.methods.topk", "~study.methods.eta", "~study.methods.top_n_sigma",
        "~study.methods.typical"]


def test_open_ended_study_points_equal_points_alone_on_the_embedded_model(tmp_path, monkeypatch, embedded):
    monkeypatch.setattr(runner, "get_model", lambda *a, **k: embedded)  # the session's loaded copy
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    sdir = tmp_path / "s"
    cli_main(["study=open_ended", *SHARED, *DROP, "study.select.metric=rep_w", "study.select.direction=min",
              f"study.dir={sdir}"])
    out = json.loads((sdir / "study_result.json").read_text())
    assert [c["method"] for c in out["choices"]] == ["greedy", "beam", "topp", "minp"]
    assert (sdir / "leaderboard.html").is_file() and "topp: top_p=" in (sdir / "leaderboard.md").read_text()
    assert len(json.loads((sdir / "minp,min_p=0.05,seed=0" / "run.json").read_text())["sweep"]["fused_with"]) == 6
    for name, ov in (("minp,min_p=0.05,seed=0", ["strategy=minp", "strategy.min_p=0.05"]),
                     ("greedy,seed=0", ["strategy=greedy"]),
                     ("beam,seed=0", ["strategy=beam", "strategy.num_beams=4"])):
        alone = runner.execute(to_specs(compose(SHARED + ["dataset=books", "seed=0", *ov])), tmp_path / f"alone-{name}")
        got = [r.token_ids for r in results.read_generations(sdir / name)]
        assert len(got) == 4 and all(got) and got == [r.token_ids for r in results.read_generations(alone["run_dir"])]
