"""Running a sweep's plan: one model load, fused batches, one result directory per point, resume.

Fused: the rows of every point in a fusion group go through the engine together, in batches of
`batch_size` x points, prompt-major (so a fused batch holds, for every point, the same prompts, padded to
the same width, as the point's own batch would). Each row carries its point's settings and seed, and a row's tokens do not depend on its
batch-mates, so every point's generations equal that point run alone.

What is never lost. Rows are appended to each point's `generations.partial.jsonl` as soon as their batch
is done. A point is complete iff its `metrics.json` exists (written last, atomically). A sweep started
again with the same `sweep.dir` skips complete points and, for the others, keeps the rows already on disk
and generates only the missing ones. So an interrupted fused sweep loses at most the batch in flight and
the scoring of the points that were not scored yet.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional


from decodebench import results, runner
from decodebench.decoding.engine import BatchStats, Request, eos_ids
from decodebench.distributed import generate  # the engine's, sharded over the ranks under a launcher
from decodebench.resume import ResumeWriter, read_partial  # noqa: F401  (read_partial: re-exported)
from decodebench.sweep.plan import Plan, Point

log = logging.getLogger("decodebench")

ERROR = results.ERROR


@dataclass
class PointRun:
    """One point being generated: its rows still to do, its writer, what it has generated so far."""

    point: Point
    dir: Path
    prep: runner.RunPlan
    info: dict
    todo: dict  # (prompt_id, sample_index) -> Request
    writer: ResumeWriter
    t_start: float
    tokens: int = 0  # generated in this attempt
    prompt_tokens: int = 0
    rows: int = 0


@dataclass
class Context:
    plan: Plan
    sweep_dir: Path
    prep: runner.RunPlan
    model: object
    tok: object
    prompts: list
    ids: dict
    group_name: str
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def write_error(ctx: Context, p: Point, exc: BaseException) -> None:
    """error.json for a failed point, when the disk allows; never beside metrics.json (a complete point's
    metrics stand: whatever failed after them did not change them)."""
    d = ctx.sweep_dir / p.name
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    ctx.failed.append({"point": p.name, "error": msg})
    log.error("sweep: point %s failed: %s (the other points go on)", p.name, msg)
    if (d / results.METRICS).exists():
        return
    try:
        results.write_json_atomic(d / ERROR, {"error": msg, "point": p.settings})
        (d / "error.txt").write_text("".join(traceback.format_exception(exc)))
    except OSError as e:  # e.g. the full disk that failed the point: the log line above still says why
        log.error("sweep: could not write %s: %s", e.filename or d / ERROR, e.strerror or e)


def start_point(ctx: Context, p: Point, fused_with: list[str]) -> PointRun:
    d = ctx.sweep_dir / p.name
    d.mkdir(parents=True, exist_ok=True)
    for stale in (ERROR, "error.txt", "metrics.partial.json"):
        (d / stale).unlink(missing_ok=True)
    results.write_text(d / "config.yaml", p.run.to_yaml())
    chat = bool(p.run.dataset.chat_template)
    reqs = runner.build_requests(ctx.prompts, ctx.tok, p.spec, p.seed, chat, ctx.ids, p.run.dataset.system_prompt)
    todo = {(r.prompt_id, r.sample_index): r for r in reqs}
    keep = [r for r in read_partial(d) if todo.pop((r.get("prompt_id"), r.get("sample_index")), None) is not None]
    bs = p.run.batch_size
    info = runner.run_info(p.run, ctx.prep, p.spec, ctx.prompts, len(reqs), 0 if str(bs) == "auto" else int(bs))
    info["sweep"] = {"dir": str(ctx.sweep_dir), "point": p.name, "fused_with": fused_with, "resumed_rows": len(keep)}
    results.write_json_atomic(d / results.RUN_INFO, info)
    return PointRun(p, d, replace(ctx.prep, spec=p.spec), info, todo, ResumeWriter(d, keep), time.perf_counter())


def point_stats(pr: PointRun, group: BatchStats, chain: list) -> BatchStats:
    """A fused point's share of the group's statistics: its own rows and tokens, and the fused batches'
    time and forward passes in proportion to its tokens (so tokens_per_s is the fused throughput)."""
    share = pr.tokens / group.generated_tokens if group.generated_tokens else 0.0
    return replace(group, rows=pr.rows, prompt_tokens=pr.prompt_tokens, generated_tokens=pr.tokens,
                   decode_s=group.decode_s * share, forward_passes=group.forward_passes * share,
                   tokens_processed=group.tokens_processed * share, chain=chain)


def point_chain(ctx: Context, p: Point) -> list:
    """The transforms the point's own rows apply (a fused batch's chain is the union over its points)."""
    from decodebench.decoding.transforms.chain import LogitsChain

    vocab = ctx.model.get_output_embeddings().weight.shape[0]
    return list(LogitsChain.from_rows([p.spec.params], vocab_size=vocab, eos_token_id=eos_ids(ctx.model, ctx.tok),
                                      device="cpu").names)


def run_group(ctx: Context, group: list[Point]) -> None:
    """Generate a fusion group's missing rows together, then score and write each point on its own.

    Raises if generation fails (the caller retries the points one by one); a point that fails in scoring
    gets its error.json and the others are still written."""
    names = [p.name for p in group]
    runs = [start_point(ctx, p, [n for n in names if n != p.name]) for p in group]
    results.note_kept(f"every complete point and the finished rows of {', '.join(names)} are in {ctx.sweep_dir}")
    mark = runner.MemoryMark(ctx.prep["device"])  # the fused points share one generation, so one peak
    for pr in runs:
        pr.prep = replace(pr.prep, memory=mark)
        pr.prep = replace(pr.prep, gen_lp=runner.gen_logprobs_for(pr.prep))
    by_id = {p.id: p for p in ctx.prompts}
    fused: list[Request] = []
    owner: list[PointRun] = []
    for p in ctx.prompts:  # prompt-major: a fused batch holds the same prompts for every point
        for s in range(group[0].spec.num_return_sequences):
            for pr in runs:
                r = pr.todo.get((p.id, s))
                if r is not None:
                    fused.append(r)
                    owner.append(pr)

    def on_batch(idx, outs):
        per: dict[int, list] = {}
        for i, o in zip(idx, outs):
            pr, r = owner[i], fused[i]
            per.setdefault(id(pr), []).append(runner.make_record(r, by_id[r.prompt_id], o, ctx.tok,
                                                                 pr.prep["gen_lp"]))
            pr.tokens += len(o.token_ids)
            pr.prompt_tokens += len(r.prompt_ids)
            pr.rows += 1
        for pr in runs:
            if id(pr) in per:
                pr.writer.write(per[id(pr)])

    stats = BatchStats()
    if fused:
        label = f"{ctx.plan.strategy}: {len(group)} point{'s' * (len(group) > 1)}"
        bs = runner.batch_size_for(ctx.plan.run, ctx.model, fused, group[0].spec, scale=len(group))
        try:  # the engine prefills a prompt once for all points' rows that share it
            with runner._progress(len(fused), ctx.plan.run.progress, label) as bar:
                run = ctx.plan.run
                _, stats = generate(ctx.model, ctx.tok, fused, group[0].spec, model_cfg=run.model,
                                    dtype=ctx.prep["dtype"], plugins=run.plugins, batch_size=bs,
                                    record=runner.record_fields(runs[0].prep), progress=bar, on_batch=on_batch,
                                    **runner.engine_options(run))
        except BaseException:
            for pr in runs:  # every finished batch is already flushed to disk
                pr.writer.f.close()
            raise
    for pr in runs:
        pr.info["batch_size"] = bs if fused else pr.info["batch_size"]
        try:
            chain = stats.chain if len(group) == 1 and fused else point_chain(ctx, pr.point)
            res = runner.finish_run(pr.point.run, pr.dir, pr.prep, pr.info, point_stats(pr, stats, chain),
                                    pr.writer, ctx.prompts, ctx.model, ctx.tok, pr.t_start)
        except Exception as e:  # noqa: BLE001 - one point's scoring failure must not stop the others
            write_error(ctx, pr.point, e)
            continue
        ctx.done.append(res)
        log_point(ctx, pr.point, res)


def log_point(ctx: Context, p: Point, res: dict) -> None:
    from decodebench import wandb_sink

    logger = p.run.logger_settings()
    if not wandb_sink.enabled(logger):
        return
    res["wandb_dir"] = wandb_sink.log_run(logger, results.read_run(res["run_dir"]),
                                          group=logger.get("group") or ctx.group_name, job_type=ctx.plan.strategy,
                                          name=f"{ctx.plan.strategy}:{p.name}")


def run_points(ctx: Context, fuse: Optional[int]) -> None:
    """Every incomplete point, group by group; a failed fused group is retried one point at a time."""
    todo = [p for p in ctx.plan.points if not results.is_complete(ctx.sweep_dir / p.name)]
    skipped = len(ctx.plan.points) - len(todo)
    if skipped:
        log.info("sweep: %d of %d points already complete in %s; running the other %d", skipped,
                 len(ctx.plan.points), ctx.sweep_dir, len(todo))
    plan_todo = replace(ctx.plan, points=todo)
    for group in plan_todo.groups(fuse):
        try:
            run_group(ctx, group)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory in a fused batch
            if len(group) == 1:
                write_error(ctx, group[0], e)
                continue
            log.warning("sweep: fused generation of %d points failed (%s: %s); running them one at a time, "
                        "keeping the rows already written", len(group), type(e).__name__, e)
            for p in group:
                if results.is_complete(ctx.sweep_dir / p.name):
                    continue
                try:
                    run_group(ctx, [p])
                except Exception as e1:  # noqa: BLE001
                    write_error(ctx, p, e1)
