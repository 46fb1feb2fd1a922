"""The study command on the tiny model: fused across strategies == each point alone, resume after a kill,
bad input refused before the model loads, the leaderboard with every method."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decodebench import results, runner
from decodebench.cli.verbs import main as cli_main
from decodebench.sweep import execute as sweep_exec
from decodebench.specs import to_specs
from tests.test_sweep import no_model, one_thread  # noqa: F401  (fixtures)

MINI = """# @package _global_
study:
  name: mini
  select: {metric: rep_w, direction: min}
  dev_fraction: 0.5
  methods:
    greedy: {strategy: greedy}
    beam: {strategy: beam, settings: {num_beams: 2}}
    topk: {strategy: topk, grid: {top_k: [3, 50]}}
    topp: {strategy: topp, grid: {top_p: [0.5, 0.9]}}
    minp: {strategy: minp, settings: {temperature: 1.5}, grid: {min_p: [0.05, 0.2]}}
    typical: {strategy: typical, grid: {typical_p: [0.5, 0.95]}}
"""
# Full-length rows (min_new_tokens) so the comparison covers every step; batch_size 5 splits the fused rows
# over several running batches.
BASE = ["study=mini", "model=tiny", "dataset.limit=4", "strategy.max_new_tokens=5", "strategy.min_new_tokens=5",
        "batch_size=5", "logger=none", "progress=false", "scorers.names=[rep_w,gen_length,distinct]",
        "scorers.rep_w.unit=token",
        "scorers.bootstrap.samples=0", "study.bootstrap=100", "study.leaderboard=false"]


@pytest.fixture
def conf(tmp_path) -> list[str]:
    (tmp_path / "conf" / "study").mkdir(parents=True)
    (tmp_path / "conf" / "study" / "mini.yaml").write_text(MINI)
    return ["--config-dir", str(tmp_path / "conf")]


def study(args, capsys):
    """`python -m decodebench ARGS` in-process: (exit code, the last stdout line's JSON or None, stderr)."""
    try:
        cli_main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return code, (json.loads(last) if last.startswith("{") else None), err


def tokens(run_dir) -> list:
    return [(r.prompt_id, r.sample_index, r.token_ids) for r in results.read_generations(run_dir)]


def points(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir())


def test_every_point_equals_the_point_run_alone(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    code, res, err = study(conf + BASE + [f"study.dir={sdir}"], capsys)
    assert code == 0, err
    dirs = points(sdir)
    assert len(dirs) == res["points"] == 10 and len(res["complete"]) == 10
    fused = json.loads((sdir / "topp,top_p=0.5,seed=0" / "run.json").read_text())["sweep"]["fused_with"]
    # one running batch for every one-token-per-step point, whatever its strategy; beam runs on its own
    others = {"greedy,seed=0", "topk,top_k=3,seed=0", "minp,min_p=0.2,seed=0", "typical,typical_p=0.95,seed=0"}
    assert others <= set(fused)
    assert "beam,seed=0" not in fused
    for d in dirs:  # each point's own config.yaml, run as it stands
        alone = runner.execute(to_specs(OmegaConf.load(d / "config.yaml")), tmp_path / "alone" / d.name)
        assert tokens(alone["run_dir"]) == tokens(d) and all(t for _, _, t in tokens(d)), d.name
    # and as the command line of a run composes it: strategy=minp with the method's settings and grid value
    from tests.conftest import compose

    cfg = compose([a for a in BASE if not a.startswith(("study", "scorers"))] +
                  ["strategy=minp", "strategy.temperature=1.5", "strategy.min_p=0.2", "seed=0",
                   "scorers.names=[gen_length]"])
    alone = runner.execute(to_specs(cfg), tmp_path / "composed")
    assert tokens(alone["run_dir"]) == tokens(sdir / "minp,min_p=0.2,seed=0")


def test_leaderboard_has_every_method_at_its_dev_choice(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    code, res, err = study(conf + BASE + [f"study.dir={sdir}", "study.leaderboard=true"], capsys)
    assert code == 0, err
    out = json.loads((sdir / "study_result.json").read_text())
    assert [c["method"] for c in out["choices"]] == ["greedy", "beam", "topk", "topp", "minp", "typical"]
    assert len(out["dev_ids"]) == 2 and len(out["test_ids"]) == 2 and not set(out["dev_ids"]) & set(out["test_ids"])
    for c in out["choices"]:  # the chosen point is the best on dev among its method's points
        mine = [p for p in out["points"] if p["method"] == c["method"]]
        assert c["point"]["dev"] == min(p["dev"] for p in mine) and c["budget"] == len(mine)
    assert sum(c["best"] for c in out["choices"]) == 1
    rows = list(csv.DictReader(open(sdir / "leaderboard.csv")))
    assert [r["method"] for r in rows if r["table"] == "selected"] == [c["method"] for c in out["choices"]]
    assert sum(r["table"] == "grid" for r in rows) == 10
    md = (sdir / "leaderboard.md").read_text()
    assert "topp: top_p=0.5" in md and "minp: temperature=1.5, min_p=0.05" in md and "common random numbers" in md
    page = (sdir / "leaderboard.html").read_text()
    assert "<script" not in page and page.count("<img") >= 2 and "sign-flip permutation" in page


def test_a_killed_study_resumes_and_repeats_nothing(tmp_path, conf, capsys, monkeypatch):
    sdir = tmp_path / "s"
    args = conf + BASE + ["batch_size=1"]  # x 9 fused points: running batches of 9 rows, 4 of them
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
    code, _, err = study(args + [f"study.dir={sdir}"], capsys)
    assert code == 130 and f"study.dir={sdir}" in err
    kept = {d.name: len(sweep_exec.read_partial(d)) for d in points(sdir)}
    assert sum(kept.values()) == sum(delivered) > 0 and not any(results.is_complete(d) for d in points(sdir))
    generated = []

    def counting(*a, on_batch=None, **k):
        generated.append(len(a[2]))  # the requests handed to the engine
        return real(*a, on_batch=on_batch, **k)

    monkeypatch.setattr(sweep_exec, "generate", counting)
    code, res, err = study(args + [f"study.dir={sdir}"], capsys)
    assert code == 0 and len(res["complete"]) == 10, err
    assert sum(generated) == 10 * 4 - sum(kept.values())  # only the rows that were not on disk
    for d in points(sdir):
        assert json.loads((d / "run.json").read_text())["sweep"]["resumed_rows"] == kept.get(d.name, 0)
    fresh = tmp_path / "fresh"
    assert study(args + [f"study.dir={fresh}"], capsys)[0] == 0
    assert {d.name: tokens(d) for d in points(sdir)} == {d.name: tokens(d) for d in points(fresh)}
    monkeypatch.setattr(sweep_exec, "generate", lambda *a, **k: pytest.fail("rows generated again"))
    code, res, _ = study(args + [f"study.dir={sdir}"], capsys)
    assert code == 0 and res["skipped"] == 10 and not res["complete"]


def test_independent_noise_salts_each_method_and_still_reproduces(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    args = conf + BASE + [f"study.dir={sdir}", "study.noise=independent", "~study.methods.beam",
                          "~study.methods.typical", "~study.methods.minp"]
    code, res, err = study(args, capsys)
    assert code == 0, err
    seeds = {d.name.split(",")[0]: int(d.name.rsplit("seed=", 1)[1]) for d in points(sdir)}
    assert len(set(seeds.values())) == 3 and 0 not in seeds.values()
    d = sdir / next(n.name for n in points(sdir) if n.name.startswith("topp,top_p=0.9"))
    alone = runner.execute(to_specs(OmegaConf.load(d / "config.yaml")), tmp_path / "alone")
    assert tokens(alone["run_dir"]) == tokens(d)
    shared = tmp_path / "shared"
    assert study(conf + BASE + [f"study.dir={shared}", "~study.methods.beam", "~study.methods.typical",
                                "~study.methods.minp"], capsys)[0] == 0
    assert tokens(shared / "topp,top_p=0.9,seed=0") != tokens(d)


# (text replaced in the study file, its replacement, or a command-line override; what the line says)
BAD = [
    (("strategy: topp,", "strategy: topq,"), "study.methods.topp.strategy: unknown strategy 'topq'; did you mean topp"),
    (("topp, grid:", "topp, grd:"), "study.methods.topp.grd: not a method key; did you mean grid"),
    (("top_p: [0.5, 0.9]", "top_pp: [0.5, 0.9]"), "study.methods.topp.grid.top_pp: strategy topp has no parameter"),
    (("top_p: [0.5, 0.9]", "top_p: [0.5, 0.8, 0.9]"), "give every tuned method the same number of points"),
    (("top_p: [0.5, 0.9]", "top_p: []"), "study.methods.topp.grid.top_p must be a non-empty list"),
    (("top_p: [0.5, 0.9]", "top_p: [1.5, 0.9]"), "study.methods.topp: point topp,top_p=1.5,seed=0: strategy.top_p"),
    (("{temperature: 1.5}", "{temprature: 1.5}"), "study.methods.minp.settings.temprature: strategy minp has no "
                                                  "parameter 'temprature'; did you mean temperature"),
    ((MINI[MINI.index("  methods:"):], "  methods: {}\n"), "study.methods is empty"),
    ("study.select.metric=mauvee", "study.select.metric: no scorer computes 'mauvee'"),
    ("study.select.metric=selected_rep_w", "needs a method with a selector"),
    ("study.select.direction=up", "study.select.direction must be max or min"),
    ("study.dev_fraction=0", "study.dev_fraction must be in (0, 1)"),
    ("study.dev_fraction=1.5", "study.dev_fraction must be in (0, 1)"),
    ("study.noise=fresh", "study.noise must be shared or independent"),
    ("study.search=anneal", "study.search must be grid (every grid point) or optuna"),
    (("top_p: [0.5, 0.9]", "top_p: {low: 0.5, high: 0.9}"), "study.methods.topp.grid.top_p: a range {low, high} "
                                                             "needs study.search=optuna"),
    ("study.bootstrap=-1", "study.bootstrap must be >= 0"),
    ("study=minii", "did you mean 'mini'"),
]


@pytest.mark.parametrize("bad,expect", BAD)
def test_bad_study_input_is_one_line_naming_the_file_and_key(bad, expect, tmp_path, conf, capsys, no_model):
    args, extra = list(BASE), []
    if isinstance(bad, tuple):
        f = tmp_path / "conf" / "study" / "mini.yaml"
        assert bad[0] in f.read_text()
        f.write_text(f.read_text().replace(bad[0], bad[1]))
    elif bad.startswith("study="):
        args = [a for a in BASE if not a.startswith("study=")] + [bad]
    else:
        extra = [bad]
    code, _, err = study(conf + args + extra + [f"study.dir={tmp_path / 's'}"], capsys)
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]
    if not str(bad).startswith("study="):
        assert f"{tmp_path}/conf/study/mini.yaml: study." in lines[0]
    assert not (tmp_path / "s").exists()


def test_a_study_dir_of_another_configuration_is_refused(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    small = BASE + ["~study.methods.beam", "~study.methods.typical", "~study.methods.minp", "~study.methods.topk"]
    assert study(conf + small + [f"study.dir={sdir}"], capsys)[0] == 0
    code, _, err = study(conf + small + [f"study.dir={sdir}", "dataset.limit=3"], capsys)
    assert code == 2 and "holds a study of a different configuration" in err and "dataset.limit" in err
    # a method added later: only its points run; the points already there are kept
    more = [a for a in small if a != "~study.methods.minp"]
    code, res, err = study(conf + more + [f"study.dir={sdir}"], capsys)
    assert code == 0 and res["skipped"] == 3 and len(res["complete"]) == 2, err


def test_wandb_one_group_per_study_with_the_summary_table(tmp_path, conf, capsys, monkeypatch):
    import sys
    import types

    inits, logged = [], []

    class FakeRun:
        def __init__(self, kw):
            self.kw, self.summary, self.dir = kw, {}, str(Path(kw["dir"]) / "wandb" / "run" / "files")

        def log(self, d):
            logged.append((self.kw["name"], d))

        def finish(self):
            pass

    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun(kw),
                                 Table=lambda columns, data: ("table", columns, data))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sdir = tmp_path / "s"
    args = [a for a in BASE if a not in ("logger=none", "study.leaderboard=false")]
    code, _, err = study(conf + args + [f"study.dir={sdir}", "~study.methods.beam", "~study.methods.typical",
                                        "~study.methods.minp", "~study.methods.topk"], capsys)
    assert code == 0, err
    assert len({kw["group"] for kw in inits}) == 1 and len(inits) == 4  # 3 points and the summary
    (table,) = [d["study_summary"] for name, d in logged if name == "mini:summary"]
    assert table[0] == "table" and [row[0] for row in table[2]] == ["greedy", "topp"]
    assert table[1][:2] == ["method", "setting"] and table[2][1][1].startswith("topp: top_p=")
