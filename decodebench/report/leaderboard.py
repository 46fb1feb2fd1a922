"""Leaderboard over run and sweep directories: markdown, CSV and a self-contained HTML page with plots.

    python -m decodebench report PATH [PATH...] [--sort METRIC] [--pareto QUALITY,DIVERSITY] [--out DIR]
                                                [--samples N]

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
import json
import sys
from pathlib import Path
from typing import Optional

from decodebench.report.csv_table import csv_records, write_csv
from decodebench.report.html_page import format_html
from decodebench.report.markdown import format_markdown
from decodebench.report.model import build_report

OUTPUTS = {"markdown": "leaderboard.md", "csv": "leaderboard.csv", "html": "leaderboard.html"}


def write_leaderboard(paths, out_dir=None, *, sort: Optional[str] = None, pareto: Optional[str] = None,
                      samples: int = 3) -> dict:
    """Write leaderboard.md, .csv and .html for run/sweep directories `paths` (a path or a list).

    Returns {"markdown", "csv", "html": paths of the files, "rows": the CSV records}. Raises ValueError
    (one line) when nothing is found or a metric name is unknown."""
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage block + message is several lines; one is the rule
        print(f"error: report: {message}; see python -m decodebench report --help", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    ap = _Parser(prog="python -m decodebench report",
                 description="Leaderboard (markdown, CSV, HTML) over run and sweep directories.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep directories")
    ap.add_argument("--sort", metavar="METRIC[:max|:min]", help="default: diversity, else a quality metric")
    ap.add_argument("--pareto", metavar="QUALITY,DIVERSITY", help="default: perplexity,diversity or mauve,diversity")
    ap.add_argument("--out", metavar="DIR", help="default: the single PATH given, else the current directory")
    ap.add_argument("--samples", type=int, default=3, metavar="N", help="sample generations per row (default 3)")
    args = ap.parse_args(argv)
    if args.samples < 0:
        ap.error(f"--samples must be >= 0, got {args.samples}")
    if args.out is not None:
        from decodebench.results import check_writable_dir

        err = check_writable_dir("--out", args.out)
        if err:
            ap.error(err)
    try:
        res = write_leaderboard(args.paths, args.out, sort=args.sort, pareto=args.pareto, samples=args.samples)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    failed = sum(r["status"] == "failed" for r in res["rows"])
    print(f"report: {len(res['rows'])} rows ({failed} failed) -> {res['markdown']}, {res['csv']}, {res['html']}")
    print(json.dumps({"leaderboard": {k: res[k] for k in OUTPUTS}, "rows": len(res["rows"]), "failed": failed}),
          flush=True)
