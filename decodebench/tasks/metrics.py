"""Task metrics for metrics.json: lm-eval's own (with filters and stderr), maj@N and pass@k.

Names: `task/<task>/<metric>` for lm-eval's "none" filter, `task/<task>/<metric>/<filter>` otherwise;
`task/<task>/maj@N/<metric>[/<filter>]`; `task/<task>/pass@k`. Each has `_stderr` and the report's
`_ci_low` / `_ci_high` (mean +- 1.96 stderr).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable, Optional

import numpy as np

Z95 = 1.959964


def metric_name(task: str, metric: str, filt: str = "none") -> str:
    return f"task/{task}/{metric}" + ("" if filt == "none" else f"/{filt}")


def higher_is_better(name: str) -> Optional[bool]:
    """Direction of a task metric (None for other names): lm-eval's perplexities go down, all else up."""
    if not name.startswith("task/"):
        return None
    from decodebench.tasks.config import LOWER_IS_BETTER

    return not any(part in LOWER_IS_BETTER for part in name.split("/")[2:])


def with_interval(out: dict, name: str, value: float, stderr: Optional[float]) -> None:
    out[name] = float(value)
    if stderr is not None and math.isfinite(stderr):
        out[f"{name}_stderr"] = float(stderr)
        out[f"{name}_ci_low"] = float(value - Z95 * stderr)
        out[f"{name}_ci_high"] = float(value + Z95 * stderr)


def lm_eval_metrics(results: dict) -> dict:
    """lm-eval's results["results"] (tasks and groups) -> flat decodebench metrics."""
    out: dict = {}
    for task, res in results.get("results", {}).items():
        for key, value in res.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float, np.floating)):
                continue
            metric, filt = key.split(",", 1)
            se = res.get(f"{metric}_stderr,{filt}")
            with_interval(out, metric_name(task, metric, filt), float(value),
                          float(se) if isinstance(se, (int, float, np.floating)) else None)
    return out


def mean_stderr(values: list[float]) -> tuple[float, Optional[float]]:
    m = float(np.mean(values))
    return m, (float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None)


def per_response(task, filt, raw: list[str], doc: dict) -> list[Any]:
    """One filter pipeline applied to each of a document's responses on its own (maj@N votes on answers)."""
    resps = [[r] for r in raw]
    docs = [doc] * len(raw)
    for f in filt.filters:
        resps = f().apply(resps, docs)
    return [r[0] if isinstance(r, (list, tuple)) else r for r in resps]


def majority(answers: list[Any]) -> Any:
    """The most frequent answer; a tie goes to the one given first (sample order, so reproducible)."""
    counts = collections.Counter(repr(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[repr(a)] == best)


def maj_at_n(task_name: str, task, samples: list[dict], n: int) -> dict:
    """Self-consistency (Wang et al. 2023): score the majority answer of N samples with the task's metrics."""
    by_filter = {f.name: f for f in task._filters}
    scores: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for s in samples:
        filt = by_filter.get(s.get("filter", "none"))
        if filt is None:
            continue
        raw = [r for group in s["resps"] for r in group]
        voted = majority(per_response(task, filt, raw, s["doc"]))
        for metric, value in task.process_results(s["doc"], [voted]).items():
            if isinstance(value, (int, float, np.floating, bool)):
                scores[(metric, filt.name)].append(float(value))
    out: dict = {}
    for (metric, filt), vals in scores.items():
        with_interval(out, metric_name(task_name, f"maj@{n}/{metric}", filt), *mean_stderr(vals))
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (Codex paper, fig. 3): 1 - C(n-c, k) / C(n, k), stably."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_ks(task_name: str, task, samples: list[dict], ks: list[int],
               run_program: Callable[[str], bool]) -> dict:
    """pass@k over documents: each response (through the task's first filter) + the task's test, executed."""
    first = task._filters[0]
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    for s in samples:
        if s.get("filter", first.name) != first.name:
            continue
        raw = [r for group in s["resps"] for r in group]
        programs = per_response(task, first, raw, s["doc"])
        test = task.doc_to_target(s["doc"])
        c = sum(run_program(f"{p}\n{test}\n") for p in programs)
        for k in ks:
            per_k[k].append(pass_at_k(len(programs), c, k))
    out: dict = {}
    for k, vals in per_k.items():
        if vals:
            with_interval(out, f"task/{task_name}/pass@{k}", *mean_stderr(vals))
    return out
