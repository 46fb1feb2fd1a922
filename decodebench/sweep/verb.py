"""The `sweep` verb: a strategy's grid in one process, one model load, fused batches (README, "Sweeps").

    python -m decodebench strategy=topp sweep [sweep.grid.top_p=[0.5,0.9]] [sweep.seeds=[0,1]]
                                              [sweep.dir=PATH] [sweep.fuse=N] [any run override]

Writes under the sweep directory (default outputs/sweeps/<date>/<time>-<strategy>):

    sweep.json                 the grid, the points, the fingerprint of the settings that are not swept
    <point>/                   e.g. top_p=0.8,temperature=0.7,seed=0: exactly a run directory
        config.yaml run.json generations.jsonl metrics.json   (error.json + error.txt when it failed)
    leaderboard.md .csv .html  over every point in the directory

Started again with the same `sweep.dir`, it skips complete points and finishes the others (resume).
Bad input is one line on stderr and exit 2 before the model loads; exit 1 when a point failed (its
error.json says why; the other points are still run); 130 when interrupted. The last stdout line is JSON.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional


from decodebench import results, runner
from decodebench.api_models.settings import is_api
from decodebench.cli import preflight
from decodebench.config import ConfigError
from decodebench.dirlock import DirLock
from decodebench.specs import RunSpec
from decodebench.sweep.execute import Context, run_points
from decodebench.sweep.plan import Plan, claim_dir, default_dir, make_plan

log = logging.getLogger("decodebench")


def _fail(msg: str, code: int = 2) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


# Hydra's ways of adding config dirs: a sweep composes the same configs as a run, so it takes them too.
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def sweep_args(argv: list[str]) -> tuple[list[str], Optional[str]]:
    """(overrides for the sweep, None) or (_, one-line error). Hydra's `hydra.sweep.dir=PATH` is the sweep
    directory, as `sweep.dir=PATH`; `--config-dir DIR` and `hydra.searchpath=[...]` add the user's configs.
    Other Hydra flags and hydra.* settings belong to Hydra's own runs and multiruns."""
    out, dirs, skip = [], {}, False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        key = a.lstrip("+~").split("=", 1)[0]
        if a in ("-m", "--multirun"):
            return out, ("sweep: -m/--multirun is Hydra's multirun; the sweep verb runs the grid in sweep.grid "
                         "(e.g. sweep.grid.top_p=[0.8,0.9]); use one or the other")
        if a in CONFIG_DIR_FLAGS:
            if i + 1 == len(argv):
                return out, f"sweep: {a} needs a directory (e.g. {a} my_conf)"
            out += [a, argv[i + 1]]
            skip = True
            continue
        if a.startswith(tuple(f"{f}=" for f in CONFIG_DIR_FLAGS)):
            out.append(a)
            continue
        if a.startswith("-"):
            return out, f"sweep: unexpected flag {a!r}; the sweep verb takes key=value overrides only"
        if key in ("sweep.dir", "hydra.sweep.dir") and "=" in a:
            dirs[key] = a.split("=", 1)[1]
            continue
        if key == "hydra.searchpath":
            out.append(a)
            continue
        if key.startswith(("hydra.", "hydra/")):
            return out, (f"sweep: {key} is a Hydra setting, not used by the sweep verb; set its directory with "
                         f"sweep.dir=PATH (or hydra.sweep.dir=PATH)")
        out.append(a)
    if len(set(dirs.values())) > 1:
        return out, (f"sweep: sweep.dir={dirs['sweep.dir']} and hydra.sweep.dir={dirs['hydra.sweep.dir']} name two "
                     f"directories; give one")
    if dirs:
        out.append(f"sweep.dir={next(iter(dirs.values()))}")
    return out, None


def _prepare_and_plan(run: RunSpec) -> tuple[dict, Plan]:
    prep = runner.prepare(run, sweep=True)  # first: it loads plugins, whose transforms a point may use
    return prep, make_plan(run)


def sweep_dir_of(run: RunSpec, plan: Plan) -> Path:
    return Path(str(run.sweep.dir)) if run.sweep.dir else default_dir(plan.strategy)


def run_sweep(run: RunSpec, sweep_dir: Optional[str | Path] = None,
              prepared: Optional[tuple[dict, Plan]] = None) -> dict:
    """Run the grid of a RunSpec (decodebench/specs.py); returns {"sweep_dir", "points", "complete", "failed", ...}.
    `prepared`: what `_prepare_and_plan(run)` returned (the preflight made it; it is not made twice).

    Raises ConfigError (one line) on bad input, before the model loads."""
    t0 = time.perf_counter()
    prep, plan = prepared or _prepare_and_plan(run)
    sdir = Path(sweep_dir) if sweep_dir is not None else sweep_dir_of(run, plan)
    with DirLock(sdir, "sweep.dir"):  # one writer per directory: a second sweep here is refused at once
        if is_api(run.model):  # an endpoint: every point's requests in one concurrent pool (api_models/sweep.py)
            from decodebench.api_models.sweep import run_api_points

            claim_dir(sdir, plan)
            ctx = Context(plan, sdir, prep, None, None, [], {}, group_name=f"sweep-{sdir.name}")
            run_api_points(run, prep, plan, sdir, ctx)
        else:
            ctx = _run_local(run, prep, plan, sdir)
        board = write_board(ctx) if run.sweep.leaderboard else None
    return {"sweep_dir": str(sdir), "strategy": plan.strategy, "points": len(plan.points),
            "complete": [r["run_dir"] for r in ctx.done], "failed": ctx.failed,
            "skipped": len(plan.points) - len(ctx.done) - len(ctx.failed), "leaderboard": board,
            "wall_time_s": time.perf_counter() - t0}


def _run_local(run: RunSpec, prep, plan: Plan, sdir: Path) -> Context:
    # Checked against the model's config before its weights load; a fused batch holds every point's rows.
    rows = runner.rows_per_forward(run, max(len(g) for g in plan.groups(run.sweep.fuse)),
                                   max(int(p.run.strategy.get("num_beams") or 1) for p in plan.points))
    prompts, ids, _ = runner.checked_prompts(run, prep, rows, max(p.spec.max_new_tokens for p in plan.points),
                                             tuple(p.spec for p in plan.points))
    claim_dir(sdir, plan)
    log.info("sweep %s: %d points -> %s (to resume: sweep.dir=%s)", plan.strategy, len(plan.points), sdir, sdir)
    model, tok = runner.get_model(run.model, prep.device, prep.dtype)
    ctx = Context(plan, sdir, prep, model, tok, prompts, ids, group_name=f"sweep-{sdir.name}")
    run_points(ctx, run.sweep.fuse)
    return ctx


def write_board(ctx: Context) -> Optional[dict]:
    """leaderboard.{md,csv,html} over the sweep directory, and the same table to W&B."""
    from decodebench import wandb_sink
    from decodebench.report import OUTPUTS, write_leaderboard

    try:
        res = write_leaderboard(ctx.sweep_dir)
    except ValueError as e:  # e.g. no point finished
        log.warning("sweep: no leaderboard: %s", e)
        return None
    rows = res["rows"]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    logger = ctx.plan.run.logger_settings()
    wandb_sink.log_table(logger, ctx.sweep_dir, "leaderboard", cols, [[r.get(c) for c in cols] for r in rows],
                         group=logger.get("group") or ctx.group_name, job_type=f"{ctx.plan.strategy}-leaderboard",
                         name=f"{ctx.plan.strategy}:leaderboard", config={"sweep": ctx.plan.grid})
    return {k: res[k] for k in OUTPUTS}


def summarize(res: dict) -> str:
    lines = [f"sweep {res['strategy']}: {res['points']} points: {len(res['complete'])} run, {res['skipped']} "
             f"already complete, {len(res['failed'])} failed, in {res['wall_time_s']:.1f} s"]
    lines += [f"  failed: {f['point']}: {f['error']}" for f in res["failed"]]
    if res["leaderboard"]:
        lines.append(f"leaderboard: {res['leaderboard']['markdown']}")
    lines.append(f"results: {res['sweep_dir']}")
    return "\n".join(lines)


def main(argv: list[str]) -> dict:
    logging.getLogger("decodebench").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    argv, err = sweep_args(argv)
    if err:
        _fail(err)
    _, prepared, err = preflight.prepare_checked(argv, prepare=_prepare_and_plan)
    if err:
        _fail(err)
    run = prepared[1].run
    where = sweep_dir_of(run, prepared[1])
    err = results.check_writable_dir("sweep.dir", where)
    if err:
        _fail(err)
    from decodebench import preemption

    preemption.note_resume("sweep.dir", str(where))
    try:
        res = run_sweep(run, where, prepared)
    except ConfigError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print(f"\nsweep interrupted; finished rows and points are kept. Resume with the same command and "
              f"sweep.dir={where}", file=sys.stderr)
        sys.exit(130)
    print(summarize(res))
    print(json.dumps({k: res[k] for k in ("sweep_dir", "points", "complete", "failed", "skipped", "leaderboard")}),
          flush=True)
    if res["failed"]:
        sys.exit(1)
    return res
