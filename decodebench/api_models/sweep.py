"""The `sweep` verb on an API model: every incomplete point's requests go out together, through one pool
of `model.concurrency` requests, then each point is finished (records, metrics) in its own directory.

Each point keeps its own api_responses.jsonl, so a sweep stopped by a failing endpoint resumes with the
same sweep.dir and requests only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import replace

from decodebench import results
from decodebench.api_models.run import check_api_run, finish, load_prompts, request_missing, start


def run_api_points(run, prep, plan, sweep_dir, ctx) -> None:
    """Fill `ctx.done` with every point's result; points already complete are left as they are."""
    points = [p for p in plan.points if not results.is_complete(sweep_dir / p.name)]
    preps = {p.name: replace(prep, spec=p.spec) for p in points}
    for p in points:  # a grid value the server cannot take is refused before any request
        check_api_run(p.run, preps[p.name])
    t_start = time.perf_counter()
    prompts = load_prompts(run, prep)
    started = [(p, *start(p.run, sweep_dir / p.name, preps[p.name], prompts)) for p in points]
    try:
        request_missing(run, [t for _, t, _ in started])
    finally:
        for _, t, _ in started:
            t.store.close()
    from decodebench.sweep.execute import log_point

    for p, t, info in started:
        res = finish(p.run, t.run_dir, preps[p.name], info, t.jobs, t.store, prompts, t.counts, t_start)
        log_point(ctx, p, res)  # one W&B run per point, as for local sweeps
        ctx.done.append(res)
