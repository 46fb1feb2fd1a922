"""The leaderboard's model: run directories -> rows (one per setting, seeds pooled) -> sorted, Pareto-marked.

The report is a view of the result records on disk (decodebench.results); it never reruns or rescores.
The views (decodebench.report.markdown, .html_page, .csv_table, .plots) read a `Report` and nothing else.

Rows. Every directory (PATH itself, or up to `MAX_DEPTH` levels below it) that holds `metrics.json` is a
complete run; one that holds `error.json`, or `run.json` without `metrics.json`, is a failed (or
unfinished) grid point. Complete runs that differ only by `seed` are one row; a row's setting is the
strategy name plus the strategy parameters that vary among the runs of that strategy, plus any model,
dataset, batch_size, device or dtype setting that varies among all runs. Failed points are rows of their
own, marked failed, with their one-line error.

Values. A row with several seeds shows mean ± std over seeds (sample std, ddof=1); a row with one seed
shows the run's value and, when the run has them, its own `<m>_ci_low` / `<m>_ci_high` interval.
Arrows: ↑/↓ from `decodebench.scorers.higher_is_better`, or `RUN_METRIC_DIRECTION` for run statistics.

Sort: `--sort METRIC[:max|:min]` (default `diversity` if present, else the first scorer metric with a
direction); best first, failed rows last. Pareto: `--pareto QUALITY,DIVERSITY` (each may end in
`:max`/`:min`; default perplexity:min vs diversity:max when both exist, else mauve vs diversity) marks
with ★ the rows that no other row beats on both. Perplexity has no arrow (degenerate text has low
perplexity too) but ranks lower-first (`RANKING_ONLY`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from decodebench import results
from decodebench.registry import did_you_mean
from decodebench.report.runs import NEUTRAL_KEYS, Run, find_runs

# Run statistics the scorer registry does not know: which way is better.
RUN_METRIC_DIRECTION = {
    "tokens_per_s": True, "prefill_tokens_per_s": True, "wall_time_s": False, "generation_time_s": False,
    "peak_memory_mb": False, "per_token_latency_ms": False, "time_to_first_token_s": False,
    "forward_passes_per_token": False, "tokens_processed_per_token": False,
}
# No arrow in the table, but an order for sorting and the Pareto front.
RANKING_ONLY = {"perplexity": False, "reference_perplexity": False}
# Bookkeeping numbers: kept in the CSV, left out of the markdown and HTML tables.
BOOKKEEPING = {"mauve_num_buckets", "mauve_num_pairs", "generated_tokens", "generation_time_s",
               "tokens_processed_per_token"}
COMPANIONS = ("_std", "_ci_low", "_ci_high", "_stderr")  # _stderr: lm-eval task metrics


@dataclass
class Stat:
    mean: float
    std: Optional[float]  # over seeds; None with one value
    lo: Optional[float]  # the run's own interval (one-seed rows)
    hi: Optional[float]


@dataclass
class Row:
    label: str
    strategy: str
    setting: dict[str, Any]  # display key -> value, for the keys that vary
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)
    error: Optional[str] = None
    pareto: Optional[bool] = None
    samples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seeds(self) -> list:
        return sorted((r.seed for r in self.runs if r.seed is not None))


@dataclass
class Report:
    rows: list[Row]
    metrics: list[str]  # every metric, scorer metrics first
    sort: Optional[tuple[str, bool]]  # (metric, higher is better)
    pareto: Optional[tuple[str, bool, str, bool]]  # (quality, higher?, diversity, higher?)
    swept: list[str]  # display keys of numeric settings that vary (x axes of the sweep plots)
    sources: list[str]

    @property
    def shown_metrics(self) -> list[str]:
        return [m for m in self.metrics if m not in BOOKKEEPING]



# ---------------------------------------------------------------- runs -> rows


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _varying(runs: list[Run], keys: Iterable[str]) -> list[str]:
    """Keys with more than one value among the runs that have them (a missing key is not a value)."""
    return [k for k in keys if len({_key(r.settings[k]) for r in runs if k in r.settings}) > 1]


def display_key(key: str) -> str:
    return {"model.name_or_path": "model", "dataset.name": "dataset"}.get(key, key.removeprefix("strategy."))


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _stat(runs: list[Run], m: str) -> Optional[Stat]:
    have = [r for r in runs if m in r.metrics and math.isfinite(r.metrics[m])]
    if len(have) > 1:
        vals = [r.metrics[m] for r in have]
        return Stat(statistics.fmean(vals), statistics.stdev(vals), None, None)
    if have:
        one = have[0].metrics
        return Stat(one[m], None, one.get(f"{m}_ci_low"), one.get(f"{m}_ci_high"))
    return None


def metric_names(runs: list[Run]) -> list[str]:
    """Base metrics (not `<m>_std`/`_ci_*` companions), scorer metrics first, in first-seen order."""
    from decodebench.scorers import higher_is_better

    seen: dict[str, None] = {}
    for r in runs:
        seen.update(dict.fromkeys(r.metrics))
    names = [m for m in seen if not any(m.endswith(s) and m[: -len(s)] in seen for s in COMPANIONS)]
    scorer = [m for m in names if higher_is_better(m) is not None or m in RANKING_ONLY]
    return scorer + [m for m in names if m not in scorer]


def collect_rows(runs: list[Run], metrics: list[str]) -> list[Row]:
    """Group complete runs that differ only by seed; each failed point is a row of its own."""
    other_keys = sorted({k for r in runs for k in r.settings if not k.startswith("strategy.")} - set(NEUTRAL_KEYS))
    shown = _varying(runs, other_keys)
    seeds_vary = len({r.seed for r in runs}) > 1
    by_strategy: dict[str, list[str]] = {}
    for name in dict.fromkeys(r.strategy for r in runs):
        group = [r for r in runs if r.strategy == name]
        keys = sorted({k for r in group for k in r.settings if k.startswith("strategy.")})
        by_strategy[name] = _varying(group, keys) + shown
    groups: dict[str, list[Run]] = {}
    for r in runs:
        ident = _key([r.strategy, {k: v for k, v in r.settings.items() if k not in NEUTRAL_KEYS}])
        groups.setdefault(ident if r.error is None else f"failed:{r.dir}", []).append(r)
    rows = []
    for members in groups.values():
        first = members[0]
        setting = {display_key(k): first.settings.get(k) for k in by_strategy[first.strategy]}
        parts = [first.strategy] + [f"{k}={_fmt_value(v)}" for k, v in setting.items() if v is not None]
        if first.error is not None and first.seed is not None and seeds_vary:
            parts.append(f"seed={first.seed}")
        members = sorted(members, key=lambda r: (r.seed is None, r.seed or 0))
        row = Row(" ".join(parts), first.strategy, setting, members, error=first.error)
        row.stats = {m: s for m in metrics if (s := _stat(members, m)) is not None}
        rows.append(row)
    labels = [r.label for r in rows]
    for r in rows:  # a failed point can share its setting with a complete row: name its directory
        if not r.ok and labels.count(r.label) > 1:
            r.label += f" [{r.runs[0].dir.name}]"
    return rows


def swept_params(rows: list[Row]) -> list[str]:
    """Display keys of settings with two or more numeric values among one strategy's complete rows."""
    out: dict[str, None] = {}
    for name in dict.fromkeys(r.strategy for r in rows):
        for k in dict.fromkeys(k for r in rows if r.strategy == name for k in r.setting):
            vals = {r.setting[k] for r in rows if r.strategy == name and r.ok and _is_number(r.setting.get(k))}
            if len(vals) > 1:
                out[k] = None
    return list(out)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- sort and Pareto


def direction(metric: str) -> Optional[bool]:
    """True: higher is better, False: lower is better, None: no arrow."""
    from decodebench.scorers import higher_is_better

    hib = higher_is_better(metric)
    if hib is None and metric.startswith("task/"):  # lm-eval task metrics (decodebench/tasks/metrics.py)
        from decodebench.tasks.metrics import higher_is_better as task_direction

        hib = task_direction(metric)
    return hib if hib is not None else RUN_METRIC_DIRECTION.get(metric)


def ranking(metric: str) -> Optional[bool]:
    """The direction used to sort and to find the Pareto front: `direction`, else `RANKING_ONLY`."""
    d = direction(metric)
    return d if d is not None else RANKING_ONLY.get(metric)


def arrow(metric: str) -> str:
    return {True: " ↑", False: " ↓", None: ""}[direction(metric)]


def _parse_choice(what: str, spec: str, metrics: list[str]) -> tuple[str, Optional[bool]]:
    name, _, way = spec.strip().partition(":")
    if name not in metrics:
        raise ValueError(f"report: {what}: {did_you_mean('metric', name, metrics)}")
    if way and way not in ("max", "min"):
        raise ValueError(f"report: {what}: {spec!r} must end in :max or :min, got {way!r}")
    return name, (way == "max") if way else ranking(name)


def choose_sort(spec: Optional[str], metrics: list[str]) -> Optional[tuple[str, bool]]:
    if spec:
        name, better = _parse_choice("--sort", spec, metrics)
        return name, True if better is None else better  # no direction: highest first
    for m in ["diversity"] + metrics:
        if m in metrics and ranking(m) is not None:
            return m, bool(ranking(m))
    return None


def choose_pareto(spec: Optional[str], metrics: list[str]) -> Optional[tuple[str, bool, str, bool]]:
    if spec:
        parts = spec.split(",")
        if len(parts) != 2:
            raise ValueError(f"report: --pareto takes two metrics QUALITY,DIVERSITY; got {spec!r}")
        pair = [_parse_choice("--pareto", p, metrics) for p in parts]
        for name, better in pair:
            if better is None:
                raise ValueError(f"report: --pareto: metric {name!r} has no better direction; write {name}:max "
                                 f"or {name}:min")
        return pair[0][0], bool(pair[0][1]), pair[1][0], bool(pair[1][1])
    for q in ("perplexity", "mauve"):
        if q in metrics and "diversity" in metrics:
            return q, bool(ranking(q)), "diversity", True
    return None


def mark_pareto(rows: list[Row], pareto: Optional[tuple[str, bool, str, bool]]) -> None:
    """★ on each ok row that no other row matches-or-beats on both metrics and beats on one."""
    if pareto is None:
        return
    q, q_up, d, d_up = pareto
    pts = {}
    for r in rows:
        if r.ok and q in r.stats and d in r.stats:
            pts[id(r)] = ((1 if q_up else -1) * r.stats[q].mean, (1 if d_up else -1) * r.stats[d].mean)
    for r in rows:
        if id(r) not in pts:
            r.pareto = None if not r.ok else False
            continue
        a = pts[id(r)]
        r.pareto = not any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in pts.values())


def sort_rows(rows: list[Row], sort: Optional[tuple[str, bool]]) -> list[Row]:
    if sort is None:
        return sorted(rows, key=lambda r: not r.ok)
    m, up = sort

    def key(r: Row):
        v = r.stats[m].mean if m in r.stats else None
        return (not r.ok, v is None, 0.0 if v is None else (-v if up else v))

    return sorted(rows, key=key)


# ---------------------------------------------------------------- samples


def read_samples(run: Run, n: int, prompt_ids: list) -> list[dict]:
    """Up to n records of a run: the first record of each wanted prompt id, topped up with the first
    records of other prompts."""
    if n <= 0 or not (run.dir / results.GENERATIONS).is_file():
        return []
    wanted, first = {}, []
    for rec in results.iter_generations(run.dir):
        pid = rec.prompt_id
        if pid in prompt_ids and pid not in wanted:
            wanted[pid] = rec
        elif pid not in prompt_ids and len(first) < n:
            first.append(rec)
        if len(wanted) == len(prompt_ids) and len(first) >= n:
            break
    picked = [wanted[p] for p in prompt_ids if p in wanted][:n]
    picked += first[: n - len(picked)]
    keep = ("prompt_id", "sample_index", "prompt", "text", "num_tokens", "finish_reason")
    return [{k: getattr(r, k) for k in keep} for r in picked]


def attach_samples(rows: list[Row], n: int) -> None:
    """The same prompts across rows (the first n prompt ids of the first row), so rows compare."""
    ok = [r for r in rows if r.ok]
    if not ok or n <= 0:
        return
    lead = read_samples(ok[0].runs[0], n, [])
    ids = list(dict.fromkeys(s["prompt_id"] for s in lead))
    for r in ok:
        r.samples = read_samples(r.runs[0], n, ids)

# ---------------------------------------------------------------- the report


def build_report(paths: list, *, sort: Optional[str] = None, pareto: Optional[str] = None,
                 samples: int = 3) -> Report:
    runs: list[Run] = []
    for p in map(Path, paths):
        if p.is_file() and p.name in ("metrics.json", "run.json", "error.json", "generations.jsonl"):
            p = p.parent
        if not p.is_dir():
            raise ValueError(f"report: no such directory: {p}")
        runs += find_runs(p)
    if not runs:
        where = ", ".join(str(p) for p in paths)
        raise ValueError(f"report: no runs found under {where}; give run or sweep directories (each with "
                         f"metrics.json)")
    metrics = metric_names(runs)
    rows = collect_rows(runs, metrics)
    sort_spec, pareto_spec = choose_sort(sort, metrics), choose_pareto(pareto, metrics)
    mark_pareto(rows, pareto_spec)
    rows = sort_rows(rows, sort_spec)
    attach_samples(rows, samples)
    return Report(rows, metrics, sort_spec, pareto_spec, swept_params(rows), [str(p) for p in paths])


# ---------------------------------------------------------------- words the views share


def fmt_stat(s: Optional[Stat], spread: str = "{}") -> str:
    """'mean ± std' over seeds, or 'mean [lo, hi]' (one run's interval); `spread` wraps the second part."""
    if s is None:
        return ""
    if s.std is not None:
        return f"{s.mean:.4g} " + spread.format(f"± {s.std:.2g}")
    if s.lo is not None and s.hi is not None:
        return f"{s.mean:.4g} " + spread.format(f"[{s.lo:.4g}, {s.hi:.4g}]")
    return f"{s.mean:.4g}"


def _better(up: bool) -> str:
    return "higher is better" if up else "lower is better"


def describe(report: Report) -> str:
    """One plain-text line: what the table holds, how it is sorted, what ★ means."""
    n_runs = sum(len(r.runs) for r in report.rows if r.ok)
    failed = sum(not r.ok for r in report.rows)
    n_set = len(report.rows) - failed
    parts = [f"{n_runs} run{'s' * (n_runs != 1)} in {n_set} setting{'s' * (n_set != 1)}"
             + (f", {failed} failed" if failed else "")]
    if report.sort:
        parts.append(f"sorted by {report.sort[0]} ({'highest' if report.sort[1] else 'lowest'} first)")
    if report.pareto:
        q, q_up, d, d_up = report.pareto
        parts.append(f"★ = Pareto-optimal on {q} ({_better(q_up)}) and {d} ({_better(d_up)})")
    parts.append("values: mean ± std over seeds, or a single seed's value [its confidence interval]")
    return "; ".join(parts) + "."


def _any_failed(report: Report) -> bool:
    return any(not r.ok for r in report.rows)


def _status(r: Row) -> str:
    return "ok" if r.ok else f"failed: {r.error}"
