"""Leaderboard over run and sweep directories: markdown, CSV and a self-contained HTML page with plots.

    python -m decodebench report PATH [PATH...] [--sort METRIC] [--pareto QUALITY,DIVERSITY] [--out DIR]
                                                [--samples N]

The report is a view of the result records on disk (decodebench.results); it never reruns or rescores.

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

Files written to `--out` (default: the single PATH given, else the current directory):

- `leaderboard.md`: the table, failed points, sample generations (fenced blocks; `|` and newlines
  escaped in table cells). Plots live in the HTML only.
- `leaderboard.csv`: one row per setting, plain numbers, empty cell = missing. Columns: `rank`,
  `setting`, `strategy`, `status` (ok | failed), `pareto` (1 | 0 | empty when no pair), `n_seeds`,
  `seeds` (space-separated), one column per varying setting key, then for every metric `m`:
  `m_mean`, `m_std` (over seeds; empty with one seed), `m_ci_low`, `m_ci_high` (the run's own
  interval; one-seed rows only); then `error` and `runs` (run directories, `;`-separated).
- `leaderboard.html`: one file, no scripts, no network: the table, plots as base64 PNG (quality-diversity
  frontier, each key metric against each swept numeric parameter, tokens_per_s per setting) and sample
  generations in `<details>`. All text from runs, models and datasets is HTML-escaped.

The last line printed to stdout is JSON: {"leaderboard": {"markdown", "csv", "html"}, "rows", "failed"}.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from decodebench.registry import did_you_mean

MAX_DEPTH = 3
NEUTRAL_KEYS = ("seed",)  # runs that differ only here are one row
TOP_SETTING_KEYS = ("batch_size", "device", "dtype")
SETTING_GROUPS = ("strategy", "model", "dataset")
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
COMPANIONS = ("_std", "_ci_low", "_ci_high")
OUTPUTS = {"markdown": "leaderboard.md", "csv": "leaderboard.csv", "html": "leaderboard.html"}


@dataclass
class Run:
    """One run directory (or failed grid point) as read from disk."""

    dir: Path
    strategy: str
    settings: dict[str, Any]  # flat dotted keys: strategy.top_p, model.name_or_path, batch_size, ...
    seed: Optional[int]
    metrics: dict[str, float]
    error: Optional[str] = None


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


# ---------------------------------------------------------------- reading runs


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _settings_of(d: Path) -> tuple[str, dict[str, Any], Optional[int]]:
    """(strategy name, flat settings, seed) from config.yaml, else run.json."""
    import yaml

    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else None
    info = _read_json(d / "run.json") if (d / "run.json").is_file() else {}
    settings: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for group in SETTING_GROUPS:
            if isinstance(cfg.get(group), dict):
                settings.update(_flatten(cfg[group], f"{group}."))
        settings.update({k: cfg[k] for k in TOP_SETTING_KEYS if k in cfg})
        if "generations" in cfg and "strategy" not in cfg:  # a `score` verb directory
            settings["strategy.name"] = f"scored:{Path(str(cfg['generations'])).name}"
    elif info:
        st = info.get("strategy") or {}
        settings.update(_flatten({k: v for k, v in st.items() if k not in ("params", "search")}, "strategy."))
        settings.update(_flatten({**(st.get("search") or {}), **(st.get("params") or {})}, "strategy."))
        settings.update({k: info[k] for k in ("device", "dtype", "batch_size") if k in info})
        if "model" in info:
            settings["model.name_or_path"] = info["model"]
    seed = (cfg or {}).get("seed", info.get("seed"))
    name = settings.pop("strategy.name", None) or "?"
    return str(name), settings, seed


def _point_settings(point: dict) -> dict[str, Any]:
    """A grid point's settings ({"top_p": 0.8} or {"strategy.top_p": 0.8}) as flat dotted keys."""
    out = {}
    for k, v in _flatten(point).items():
        k = str(k).lstrip("+~")
        k = "strategy.name" if k == "strategy" else k
        out[k if "." in k or k in TOP_SETTING_KEYS + NEUTRAL_KEYS else f"strategy.{k}"] = v
    return out


def _one_line(text: Any) -> str:
    lines = [s.strip() for s in str(text).strip().splitlines() if s.strip()]
    return lines[-1] if lines else "(no message)"


def read_run(d: Path) -> Run:
    """One directory: a complete run, a failed point (error.json), or an unfinished run."""
    name, settings, seed = _settings_of(d)
    if (d / "metrics.json").is_file():
        metrics = {k: float(v) for k, v in _read_json(d / "metrics.json").items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return Run(d, name, settings, seed, metrics)
    if (d / "error.json").is_file():
        err = _read_json(d / "error.json")
        point = _point_settings(err.get("point") or {})
        seed = point.pop("seed", seed)
        name = str(point.pop("strategy.name", None) or name)
        error = _one_line(err.get("error", "(no message)"))
        return Run(d, name, {**settings, **point}, seed, {}, error)
    return Run(d, name, settings, seed, {}, "unfinished: no metrics.json (still running, or killed)")


def _is_result_dir(d: Path) -> bool:
    return any((d / f).is_file() for f in ("metrics.json", "error.json", "run.json"))


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_runs(path: Path, depth: int = MAX_DEPTH) -> list[Run]:
    """Every run and failed point at or below `path`, in natural directory order."""
    if _is_result_dir(path):
        return [read_run(path)]
    if depth == 0:
        return []
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural)
    return [run for c in children for run in find_runs(c, depth - 1)]


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
    path = run.dir / "generations.jsonl"
    if n <= 0 or not path.is_file():
        return []
    wanted, first = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            pid = rec.get("prompt_id")
            if pid in prompt_ids and pid not in wanted:
                wanted[pid] = rec
            elif pid not in prompt_ids and len(first) < n:
                first.append(rec)
            if len(wanted) == len(prompt_ids) and len(first) >= n:
                break
    picked = [wanted[p] for p in prompt_ids if p in wanted][:n]
    picked += first[: n - len(picked)]
    keep = ("prompt_id", "sample_index", "prompt", "text", "num_tokens", "finish_reason")
    return [{k: r.get(k) for k in keep} for r in picked]


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


# ---------------------------------------------------------------- CSV


def csv_records(report: Report) -> list[dict[str, Any]]:
    """The CSV rows as plain dicts (None = empty cell); also what write_leaderboard returns."""
    keys = list(dict.fromkeys(k for r in report.rows for k in r.setting))
    out = []
    for rank, r in enumerate(report.rows, 1):
        rec: dict[str, Any] = {"rank": rank, "setting": r.label, "strategy": r.strategy,
                               "status": "ok" if r.ok else "failed",
                               "pareto": None if r.pareto is None else int(r.pareto),
                               "n_seeds": len(r.runs), "seeds": " ".join(map(str, r.seeds))}
        rec.update({k: r.setting.get(k) for k in keys})
        for m in report.metrics:
            s = r.stats.get(m)
            rec.update({f"{m}_mean": s and s.mean, f"{m}_std": s and s.std, f"{m}_ci_low": s and s.lo,
                        f"{m}_ci_high": s and s.hi})
        rec["error"] = r.error
        rec["runs"] = ";".join(str(x.dir) for x in r.runs)
        out.append(rec)
    return out


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    cols = list(dict.fromkeys(k for rec in records for k in rec))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for rec in records:
            w.writerow({k: "" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v)
                        for k, v in rec.items()})


# ---------------------------------------------------------------- public API


def write_leaderboard(paths, out_dir=None, *, sort: Optional[str] = None, pareto: Optional[str] = None,
                      samples: int = 3) -> dict:
    """Write leaderboard.md, .csv and .html for run/sweep directories `paths` (a path or a list).

    Returns {"markdown", "csv", "html": paths of the files, "rows": the CSV records}. Raises ValueError
    (one line) when nothing is found or a metric name is unknown."""
    from decodebench.report_html import format_html, format_markdown

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    report = build_report(paths, sort=sort, pareto=pareto, samples=samples)
    if out_dir is None:
        out_dir = paths[0] if len(paths) == 1 and Path(paths[0]).is_dir() else "."
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / v for k, v in OUTPUTS.items()}
    records = csv_records(report)
    files["markdown"].write_text(format_markdown(report), encoding="utf-8")
    write_csv(files["csv"], records)
    files["html"].write_text(format_html(report), encoding="utf-8")
    return {**{k: str(v) for k, v in files.items()}, "rows": records}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m decodebench report",
                                 description="Leaderboard (markdown, CSV, HTML) over run and sweep directories.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep directories")
    ap.add_argument("--sort", metavar="METRIC[:max|:min]", help="default: diversity, else a quality metric")
    ap.add_argument("--pareto", metavar="QUALITY,DIVERSITY", help="default: perplexity,diversity or mauve,diversity")
    ap.add_argument("--out", metavar="DIR", help="default: the single PATH given, else the current directory")
    ap.add_argument("--samples", type=int, default=3, metavar="N", help="sample generations per row (default 3)")
    args = ap.parse_args(argv)
    try:
        res = write_leaderboard(args.paths, args.out, sort=args.sort, pareto=args.pareto, samples=args.samples)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    failed = sum(r["status"] == "failed" for r in res["rows"])
    print(f"report: {len(res['rows'])} rows ({failed} failed) -> {res['markdown']}, {res['csv']}, {res['html']}")
    print(json.dumps({"leaderboard": {k: res[k] for k in OUTPUTS}, "rows": len(res["rows"]), "failed": failed}),
          flush=True)
