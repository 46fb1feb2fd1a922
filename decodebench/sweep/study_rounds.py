"""The rounds of `study.search=optuna` (study_search.py says what is searched and why it reproduces).

Round r asks one trial of every tuned method that has fewer than study.trials finished ones (or takes the
trial a kill left RUNNING), makes each trial's points (one per seed), runs the round's points with the sweep's
executor (the first round also runs the untuned methods' points), so the one-token-per-step points of every
method share one running batch, then tells each trial its dev objective. The trials are in the journal before
their points run, and a point is complete iff its metrics.json exists: a kill anywhere loses at most the
batch in flight, and repeats no finished trial.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from decodebench import results
from decodebench.sweep.execute import Context, run_points
from decodebench.sweep.plan import Point
from decodebench.sweep.study_plan import StudyPlan, method_points
from decodebench.sweep.study_search import mean_dev, open_studies, pending, tell, trial_log, trial_values

log = logging.getLogger("decodebench")


def trial_points(splan: StudyPlan, label: str, params: dict) -> list[Point]:
    """A trial's points: the method at the trial's values, one point per seed (checked like a grid point)."""
    s = splan.search
    m = splan.methods_by_label()[label]
    values = trial_values(s, label, params)
    return method_points(replace(m, grid={k: [v] for k, v in values.items()}), s.runs[label], s.file, s.seeds,
                         s.noise)


def dev_objective(ctx: Context, scorer, split: tuple, points: list[Point]):
    """The mean dev objective over a trial's complete points (None: none of them finished)."""
    devs = [scorer.score(ctx.sweep_dir / p.name, bool(p.spec.search.get("selector")), *split)["dev"]
            for p in points if results.is_complete(ctx.sweep_dir / p.name)]
    return mean_dev(devs)


def run_rounds(ctx: Context, splan: StudyPlan, claim_dir: Callable, objective: Callable) -> dict:
    """Every trial of every tuned method, round by round; returns each method's trials (trial_log).
    On return splan.points and splan.method_of hold every point the study ran (the untuned methods' first).
    `claim_dir(sdir, splan)` records the points in study.json, `objective(ctx, splan, done)` is
    (scorer, dev ids, test ids) (study_run's)."""
    s = splan.search
    studies = open_studies(ctx.sweep_dir, s, splan.maximize)
    fixed = [p for p in splan.points if splan.method_of[p.name] not in s.spaces]
    known = {p.name: p for p in fixed}
    method_of = {p.name: splan.method_of[p.name] for p in fixed}
    for label, study in studies.items():  # a resumed study: the points of the trials already in the journal
        for t in study.get_trials(deepcopy=False):
            for p in trial_points(splan, label, t.params):
                known.setdefault(p.name, p)
                method_of.setdefault(p.name, label)
    scorer, split, rnd = None, None, 0
    while True:
        asked = pending(studies, s)
        if not asked and rnd > 0:
            break
        todo, mine = list(fixed) if rnd == 0 else [], {}
        for label, trial in asked.items():
            mine[label] = trial_points(splan, label, trial.params)
            for p in mine[label]:  # a repeated trial's point is run once (and skipped once complete)
                known.setdefault(p.name, p)
                method_of.setdefault(p.name, label)
                if all(q.name != p.name for q in todo):
                    todo.append(p)
        splan.points, splan.method_of = list(known.values()), method_of
        claim_dir(ctx.sweep_dir, splan)  # study.json lists the points asked so far
        log.info("study %s: optuna round %d: %s", splan.name, rnd + 1,
                 ", ".join(f"{label} trial {t.number}" for label, t in asked.items()) or "untuned methods")
        ctx.plan = replace(ctx.plan, points=todo)
        run_points(ctx, splan.run.study.fuse)
        if scorer is None:
            done = [p for p in splan.points if results.is_complete(ctx.sweep_dir / p.name)]
            if done:
                scorer, *rest = objective(ctx, splan, done)
                split = tuple(rest)
        for label, trial in asked.items():
            tell(studies[label], trial, None if scorer is None else dev_objective(ctx, scorer, split, mine[label]))
        rnd += 1
    return trial_log(studies)
