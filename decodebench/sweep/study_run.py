"""Running a study: one model load, every method's points fused across methods, resume, fair selection.

The points go through the sweep's executor (execute.run_points): a fusion group holds every point whose
rows are one token per step with the same loop-level settings, whatever its strategy, so greedy, top-k,
top-p, min-p, ... share one running batch, and a prompt is prefilled once for all of them. Search methods
(beam, contrastive, ...) run in groups of their own on the same model. Each point is a run directory
under the study directory, complete iff its metrics.json exists: a study started again with the same
`study.dir` skips complete points and keeps the rows of the others (execute.py says what is kept).

Then, with the model still loaded: the objective of every point (study_scores.py, cached per point), the
dev/test split and each method's choice (select.py), every metric of the chosen points on the test prompts,
and `study.json`'s `result` for the report (decodebench/report/study_board.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional


from decodebench import preemption, results, runner
from decodebench.config import ConfigError
from decodebench.dirlock import DirLock
from decodebench.specs import read_settings
from decodebench.sweep.execute import Context, run_points
from decodebench.sweep.plan import _diff, _holds_results
from decodebench.sweep.select import PointScore, select, split_ids
from decodebench.sweep.study_plan import STUDY_JSON, StudyPlan
from decodebench.sweep.study_scores import PointScorer
from decodebench.sweep.study_search import space_json

log = logging.getLogger("decodebench")
RESULT = "study_result.json"


def default_dir(name: str) -> Path:
    return Path("outputs/studies") / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}-{name}"


def claim_dir(sdir: Path, splan: StudyPlan) -> dict:
    """Create or reopen the study directory; refuse one that holds another configuration's results. A point
    already there must have the same strategy settings and seed (a method's grid may grow between runs)."""
    meta_path = sdir / STUDY_JSON
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != splan.fingerprint:
            diff = _diff(meta.get("config", {}), splan.base) or ["(settings not recorded)"]
            raise ConfigError(f"study.dir {sdir} holds a study of a different configuration ({'; '.join(diff[:2])}); "
                              f"use a new study.dir, or the settings it was run with")
    elif _holds_results(sdir) or any(_holds_results(c) for c in (sdir.iterdir() if sdir.is_dir() else [])):
        raise ConfigError(f"study.dir {sdir} already holds results that are not a decodebench study (no "
                          f"{STUDY_JSON}); use a new study.dir")
    else:
        meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for p in splan.points:
        old = sdir / p.name / "config.yaml"
        if old.is_file():
            was = read_settings(old)
            now = p.run.settings()
            if (was.get("strategy"), was.get("seed")) != (now["strategy"], now["seed"]):
                raise ConfigError(f"study.dir {sdir}: point {p.name} was run with other strategy settings; "
                                  f"use a new study.dir")
    meta.update({"name": splan.name, "file": splan.file, "fingerprint": splan.fingerprint, "config": splan.base,
                 "methods": {m.label: {"strategy": m.strategy, "settings": m.settings, "grid": space_json(m.grid)}
                             for m in splan.methods},
                 "points": {p.name: splan.method_of[p.name] for p in splan.points},
                 "search": splan.search.describe() if splan.search is not None else {"search": "grid"},
                 "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    results.write_json_atomic(meta_path, meta)
    return meta


def objective(ctx: Context, splan: StudyPlan, done: list) -> tuple[PointScorer, list, list]:
    """The objective's scorer and the dev/test split (by prompt id; by document id for a task metric)."""
    run = splan.run
    common = dict(model=ctx.model, tokenizer=ctx.tok, device=ctx.prep["device"], seed=int(run.seed), progress=False)
    scorer = PointScorer(ctx.prep["plan"], splan.metric, common, key={})
    if scorer.task:
        ids = list(scorer.values(ctx.sweep_dir / done[0].name, False))
    else:
        ids = [str(p.id) for p in ctx.prompts]
    dev, test = split_ids(ids, float(run.study.dev_fraction), int(run.study.split_seed))
    scorer.key = {"metric": splan.metric, "dev": dev, "test": test}
    return scorer, dev, test


def score_and_select(ctx: Context, splan: StudyPlan, trials: Optional[dict] = None) -> dict:
    """The objective per point, the split, the choices and the test metrics of the chosen points.
    `trials`: with study.search=optuna, every method's trials (recorded in study_result.json)."""
    st = splan.run.study
    done = [p for p in splan.points if results.is_complete(ctx.sweep_dir / p.name)]
    if not done:
        raise ValueError("no point of the study finished")
    selected = {p.name: bool(p.spec.search.get("selector")) for p in done}
    scorer, dev, test = objective(ctx, splan, done)
    scores = []
    for p in done:
        s = scorer.score(ctx.sweep_dir / p.name, selected[p.name], dev, test)
        scores.append(PointScore(p.name, splan.method_of[p.name], splan.label(p), s["dev"], s["test"],
                                 s["per_prompt"], {**splan.methods_by_label()[splan.method_of[p.name]].settings,
                                                   **p.values}))
    choices = select(scores, test, splan.maximize, int(st.bootstrap), int(st.split_seed))
    for c in choices if splan.search is not None else ():  # the budget is trials (a repeated one reuses its point)
        c.budget = splan.search.trials if c.method in splan.search.spaces else 1
    test_metrics = {c.point.name: scorer.test_metrics(ctx.sweep_dir / c.point.name, selected[c.point.name], test)
                    for c in choices}
    out = {"name": splan.name, "metric": splan.metric, "maximize": splan.maximize, "noise": str(st.noise),
           "dev_fraction": float(st.dev_fraction), "dev_ids": dev, "test_ids": test, "bootstrap": int(st.bootstrap),
           "test": "paired sign-flip permutation test on per-prompt test scores, two-sided",
           "points": [asdict(s) for s in scores], "choices": [asdict(c) for c in choices],
           "test_metrics": test_metrics, "selected": [n for n, v in selected.items() if v],
           "missing": sorted({p.name for p in splan.points} - {p.name for p in done}),
           "search": splan.search.describe() if splan.search is not None else {"search": "grid"}}
    if trials is not None:
        out["trials"] = trials
    results.write_json_atomic(ctx.sweep_dir / RESULT, out)
    return out


def run_study(splan: StudyPlan, sdir: Path, prep) -> dict:
    """Run every incomplete point, score, select, write the leaderboard; returns the summary dict.
    Raises ConfigError (one line) on bad input, before the model loads."""
    t0 = time.perf_counter()
    run = splan.run
    plan = splan.sweep_plan()
    with DirLock(sdir, "study.dir"):  # one writer per directory: a second study here is refused at once
        rows = runner.rows_per_forward(run, max(len(g) for g in plan.groups(run.study.fuse)),
                                       max(int(p.run.strategy.get("num_beams") or 1) for p in plan.points))
        prompts, ids, _ = runner.checked_prompts(run, prep, rows, max(p.spec.max_new_tokens for p in plan.points),
                                                 tuple(p.spec for p in plan.points))
        claim_dir(sdir, splan)
        preemption.note_resume("study.dir", str(sdir))  # SIGTERM/SIGUSR1: the line names this resume
        size = f"{len(plan.points)} points" if splan.search is None else \
            f"optuna, {splan.search.trials} trials per tuned method"
        log.info("study %s: %d methods, %s -> %s (to resume: study.dir=%s)", splan.name, len(splan.methods), size,
                 sdir, sdir)
        model, tok = runner.get_model(run.model, prep.device, prep.dtype)
        ctx = Context(plan, sdir, prep, model, tok, prompts, ids, group_name=f"study-{splan.name}-{sdir.name}")
        trials = None
        if splan.search is not None:  # optuna: rounds of one trial per method, each round fused
            from decodebench.sweep.study_rounds import run_rounds

            trials = run_rounds(ctx, splan, claim_dir, objective)
        else:
            run_points(ctx, run.study.fuse)
        res: Optional[dict] = None
        board = None
        try:
            res = score_and_select(ctx, splan, trials)
        except ValueError as e:
            log.warning("study: no selection: %s", e)
        if res is not None and run.study.leaderboard:
            from decodebench.report.study_board import log_to_wandb, write_study_board

            board = write_study_board(sdir)
            log_to_wandb(run, sdir, ctx.group_name)
    n = len(splan.points)  # with optuna: the points its trials asked for
    return {"study_dir": str(sdir), "name": splan.name, "points": n,
            "complete": [r["run_dir"] for r in ctx.done], "failed": ctx.failed,
            "skipped": n - len(ctx.done) - len(ctx.failed), "leaderboard": board,
            "choices": [{"method": c["method"], "setting": c["point"]["label"], "test": c["point"]["test"]}
                        for c in (res or {}).get("choices", [])], "wall_time_s": time.perf_counter() - t0}
