"""study.search=optuna on the tiny model: Optuna's own TPE with study.trials per tuned method, rounds fused
across methods, every point equal to itself run alone, resume after a kill with no trial repeated or lost and
the same trials as an uninterrupted run, bad search spaces refused before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decodebench import results, runner
from decodebench.sweep import execute as sweep_exec
from decodebench.specs import to_specs
from decodebench.sweep import study_rounds
from decodebench.sweep.study_search import JOURNAL, Range, Search
from tests.test_study import points, study, tokens
from tests.test_sweep import no_model, one_thread  # noqa: F401  (fixtures)

OPTUNA = """# @package _global_
study:
  name: mini
  select: {metric: rep_w, direction: min}
  dev_fraction: 0.5
  search: optuna
  trials: 3
  methods:
    greedy: {strategy: greedy}
    beam: {strategy: beam, settings: {num_beams: 2}}
    topk: {strategy: topk, grid: {top_k: {low: 2, high: 50, log: true}}}
    topp: {strategy: topp, grid: {top_p: {low: 0.3, high: 0.95}}}
    minp: {strategy: minp, settings: {temperature: 1.5}, grid: {min_p: [0.05, 0.1, 0.2]}}
"""
BASE = ["study=mini", "model=tiny", "dataset.limit=4", "strategy.max_new_tokens=5", "strategy.min_new_tokens=5",
        "batch_size=1", "logger=none", "progress=false", "scorers.names=[rep_w,gen_length]",
        "scorers.rep_w.unit=token", "scorers.bootstrap.samples=0", "study.bootstrap=100", "study.leaderboard=false"]
TUNED = ("topk", "topp", "minp")


@pytest.fixture
def conf(tmp_path) -> list[str]:
    (tmp_path / "conf" / "study").mkdir(parents=True)
    (tmp_path / "conf" / "study" / "mini.yaml").write_text(OPTUNA)
    return ["--config-dir", str(tmp_path / "conf")]


def trials_of(sdir: Path) -> dict:
    return json.loads((sdir / "study_result.json").read_text())["trials"]


def replay(trials: list[dict], search: Search, label: str, maximize: bool) -> list[dict]:
    """The parameters plain Optuna asks, trial by trial, with the sampler seeds the study uses and the values
    the study told: a reference for study_search.ask."""
    import optuna

    ref = optuna.create_study(direction="maximize" if maximize else "minimize")
    dists = {k: v.distribution() if isinstance(v, Range) else optuna.distributions.CategoricalDistribution(v)
             for k, v in search.spaces[label].items()}
    out = []
    for t in trials:
        ref.sampler = optuna.samplers.TPESampler(seed=search.sampler_seed(label, t["number"]),
                                                 n_startup_trials=search.startup())
        asked = ref.ask(dists)
        out.append(asked.params)
        ref.tell(asked, t["value"])
    return out


def test_optuna_gives_every_method_the_same_trials_in_fused_rounds(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    code, res, err = study(conf + BASE + ["study.trials=4", f"study.dir={sdir}", "study.leaderboard=true"], capsys)
    assert code == 0, err
    trials = trials_of(sdir)
    assert sorted(trials) == sorted(TUNED)
    for label in TUNED:  # the same budget: study.trials finished trials per tuned method
        assert [t["state"] for t in trials[label]] == ["COMPLETE"] * 4, label
    # the trials are Optuna's own TPE's, seeded per trial from the study's seed
    from decodebench.sweep.study_search import Search

    spaces = {"topk": {"top_k": Range(2, 50, True, True)}, "topp": {"top_p": Range(0.3, 0.95, False, False)},
              "minp": {"min_p": [0.05, 0.1, 0.2]}}
    search = Search(4, 0, spaces, {}, [0], "shared", "")
    for label in TUNED:
        assert replay(trials[label], search, label, maximize=False) == [t["params"] for t in trials[label]]
    assert len({t["params"]["top_p"] for t in trials["topp"]}) > 1  # it searches, not one point four times
    # a round's points of every one-token-per-step method share one running batch; beam runs on its own
    first = {f"topk,top_k={trials['topk'][0]['params']['top_k']},seed=0", "greedy,seed=0",
             f"minp,min_p={trials['minp'][0]['params']['min_p']:g},seed=0"}
    topp0 = f"topp,top_p={float(format(trials['topp'][0]['params']['top_p'], '.4g')):g},seed=0"
    fused = json.loads((sdir / topp0 / "run.json").read_text())["sweep"]["fused_with"]
    assert set(fused) == first
    for d in points(sdir)[:4]:  # each point's own config.yaml, run as it stands
        alone = runner.execute(to_specs(OmegaConf.load(d / "config.yaml")), tmp_path / "alone" / d.name)
        assert tokens(alone["run_dir"]) == tokens(d) and all(t for _, _, t in tokens(d)), d.name
    out = json.loads((sdir / "study_result.json").read_text())
    for c in out["choices"]:  # chosen on dev among the method's trials; the budget is the trials
        mine = [p for p in out["points"] if p["method"] == c["method"]]
        assert c["point"]["dev"] == min(p["dev"] for p in mine)
        assert c["budget"] == (4 if c["method"] in TUNED else 1)
        if c["method"] in TUNED:
            assert c["point"]["dev"] == min(t["value"] for t in trials[c["method"]])
    assert out["search"]["search"] == "optuna" and out["search"]["trials"] == 4
    import csv

    rows = [r for r in csv.DictReader(open(sdir / "leaderboard.csv")) if r["table"] == "selected"]
    assert {r["method"]: r["points tried"] for r in rows} == {"greedy": "1", "beam": "1", "topk": "4", "topp": "4",
                                                              "minp": "4"}


def _kill_in_generation(monkeypatch, calls: list):
    """KeyboardInterrupt in the second round's fused generation, after its first batch reached the disk."""
    real = sweep_exec.generate

    def interrupted(*a, on_batch=None, **k):
        calls.append(len(a[2]))

        def hook(idx, outs):
            on_batch(idx, outs)
            if len(calls) == 3:  # round 1: the one-token batch and beam's; round 2: the one-token batch
                raise KeyboardInterrupt
        return real(*a, on_batch=hook, **k)

    monkeypatch.setattr(sweep_exec, "generate", interrupted)


def _kill_between_tells(monkeypatch, calls: list):
    """KeyboardInterrupt in round 2 after the first method's trial was told and before the others'."""
    real = study_rounds.tell

    def interrupted(study_, trial, value):
        calls.append(trial.number)
        real(study_, trial, value)
        if len(calls) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(study_rounds, "tell", interrupted)


@pytest.mark.parametrize("kill", [_kill_in_generation, _kill_between_tells])
def test_a_killed_optuna_study_resumes_with_no_trial_repeated_or_lost(kill, tmp_path, conf, capsys, monkeypatch):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sdir = tmp_path / "s"
    calls: list = []
    with monkeypatch.context() as m:
        kill(m, calls)
        code, _, err = study(conf + BASE + [f"study.dir={sdir}"], capsys)
    assert code == 130 and f"study.dir={sdir}" in err
    storage = JournalStorage(JournalFileBackend(str(sdir / JOURNAL)))
    states = {k: [t.state.name for t in optuna.load_study(study_name=k, storage=storage).trials] for k in TUNED}
    assert all(v[0] == "COMPLETE" and len(v) == 2 for v in states.values()), states  # killed in round 2
    assert "RUNNING" in sum(states.values(), [])
    kept = {d.name: len(sweep_exec.read_partial(d)) for d in points(sdir)}
    complete = {d.name for d in points(sdir) if results.is_complete(d)}
    assert sum(kept.values()) > 0
    generated = []
    real = sweep_exec.generate

    def counting(*a, **k):
        generated.append(len(a[2]))
        return real(*a, **k)

    monkeypatch.setattr(sweep_exec, "generate", counting)
    code, res, err = study(conf + BASE + [f"study.dir={sdir}"], capsys)
    assert code == 0, err
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(sweep_exec, "generate", real)
    assert study(conf + BASE + [f"study.dir={fresh}"], capsys)[0] == 0
    assert trials_of(sdir) == trials_of(fresh)  # the same trials, parameters and values: none repeated or lost
    assert all(len(v) == 3 for v in trials_of(sdir).values())
    assert {d.name: tokens(d) for d in points(sdir)} == {d.name: tokens(d) for d in points(fresh)}
    # only the rows that were not on disk: 4 prompts x 1 sample per point not complete at the kill
    assert sum(generated) == sum(4 - kept.get(d.name, 0) for d in points(fresh) if d.name not in complete)
    monkeypatch.setattr(sweep_exec, "generate", lambda *a, **k: pytest.fail("rows generated again"))
    code, res, _ = study(conf + BASE + [f"study.dir={sdir}"], capsys)
    assert code == 0 and not res["complete"] and trials_of(sdir) == trials_of(fresh)


def test_more_trials_later_asks_only_the_new_ones(tmp_path, conf, capsys, monkeypatch):
    sdir = tmp_path / "s"
    assert study(conf + BASE + ["study.trials=2", f"study.dir={sdir}"], capsys)[0] == 0
    two = trials_of(sdir)
    code, res, err = study(conf + BASE + ["study.trials=3", f"study.dir={sdir}"], capsys)
    assert code == 0, err
    three = trials_of(sdir)
    assert all(three[k][:2] == two[k] and len(three[k]) == 3 for k in TUNED)
    assert all(Path(d).name.split(",")[0] in TUNED for d in res["complete"])  # greedy and beam: not again
    fresh = tmp_path / "fresh"
    assert study(conf + BASE + ["study.trials=3", f"study.dir={fresh}"], capsys)[0] == 0
    assert trials_of(fresh) == three


BAD = [
    ("{low: 0.3, high: 0.95}", "{low: 0.95, high: 0.3}", "study.methods.topp.grid.top_p: low must be below high"),
    ("{low: 0.3, high: 0.95}", "{low: 0.3, hi: 0.95}", "study.methods.topp.grid.top_p.hi: not a range key"),
    ("{low: 0.3, high: 0.95}", "{low: 0.0, high: 0.95, log: true}", "study.methods.topp.grid.top_p: a log range "
                                                                    "needs low > 0"),
    ("{low: 2, high: 50, log: true}", "{low: 2.5, high: 50}", "study.methods.topk.grid.top_k.low must be an integer"),
    ("{low: 0.3, high: 0.95}", "{low: 1.5, high: 2.0}", "study.methods.topp: point topp,top_p=1.5,seed=0: "
                                                        "strategy.top_p"),
    ("[0.05, 0.1, 0.2]", "[[0.05], 0.1]", "study.methods.minp.grid.min_p: with study.search=optuna a listed value"),
    ("trials: 3", "trials: 0", "study.trials must be an integer >= 1"),
]


@pytest.mark.parametrize("old,new,expect", BAD)
def test_bad_search_space_is_one_line_naming_the_file_and_key(old, new, expect, tmp_path, conf, capsys, no_model):
    f = tmp_path / "conf" / "study" / "mini.yaml"
    assert old in f.read_text()
    f.write_text(f.read_text().replace(old, new))
    code, _, err = study(conf + BASE + [f"study.dir={tmp_path / 's'}"], capsys)
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0] and f"{tmp_path}/conf/study/mini.yaml: study." in lines[0], lines[0]
    assert not (tmp_path / "s").exists()


def test_a_journal_over_another_space_is_refused(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    assert study(conf + BASE + ["study.trials=1", f"study.dir={sdir}"], capsys)[0] == 0
    code, _, err = study(conf + BASE + ["study.trials=1", f"study.dir={sdir}",
                                        "study.methods.topp.grid.top_p.high=0.9"], capsys)
    assert code == 2 and "Optuna trials of method topp searched another space" in err, err


def test_a_trial_over_several_seeds_is_told_the_mean_dev_objective(tmp_path, conf, capsys):
    sdir = tmp_path / "s"
    args = conf + BASE + ["study.trials=2", "study.seeds=[0,1]", f"study.dir={sdir}", "~study.methods.beam",
                          "~study.methods.topk", "~study.methods.minp"]
    code, res, err = study(args, capsys)
    assert code == 0, err
    out = json.loads((sdir / "study_result.json").read_text())
    dev = {p["name"]: p["dev"] for p in out["points"]}
    for t in out["trials"]["topp"]:
        v = float(format(t["params"]["top_p"], ".4g"))
        mine = [dev[f"topp,top_p={v:g},seed={s}"] for s in (0, 1)]
        assert t["value"] == pytest.approx(sum(mine) / 2)
    assert len(out["trials"]["topp"]) == 2 and res["points"] == 2 + 2 * len({t["params"]["top_p"]
                                                                               for t in out["trials"]["topp"]})


def test_a_trial_with_no_objective_is_told_failed_without_a_warning(recwarn):
    import optuna

    from decodebench.sweep.study_search import tell

    s = optuna.create_study()
    for value in (None, float("nan"), 0.5):
        tell(s, s.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), value)
    assert [t.state.name for t in s.trials] == ["FAIL", "FAIL", "COMPLETE"] and s.trials[2].value == 0.5
    assert not [w for w in recwarn if "nan" in str(w.message)]
