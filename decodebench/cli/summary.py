"""The run verb's answer for a person: a short table of its headline metrics, on stderr.

stdout keeps the machine-readable JSON line as its last line; this table is the same numbers, rounded, with
their 95% intervals where the scorers computed them, and where the results are on disk. A metric the run did
not compute (a scorer not chosen) has no row; one that is undefined (NaN: texts too short for 4-grams) says
so.

Example (the default job)::

    decodebench: 128 generations, strategy greedy, 312.4 s
      generation speed        135.4 tokens/s
      diversity               0.05382   [0.04102, 0.06797]   (1-rep_2)(1-rep_3)(1-rep_4); higher: less repetition
      ...
    results: outputs/runs/2026-12-02/01-00-00-greedy  (generations.jsonl, metrics.json)
"""

from __future__ import annotations

import math
import sys
from typing import IO, Optional

# (metric key in metrics.json, label, unit or meaning): the rows, in the order shown
ROWS: tuple[tuple[str, str, str], ...] = (
    ("tokens_per_s", "generation speed", "tokens/s"),
    ("time_to_first_token_s", "time to first token", "s (median over batches)"),
    ("diversity", "diversity", "(1-rep_2)(1-rep_3)(1-rep_4); higher: less repetition"),
    ("distinct_2", "distinct-2", "unique bigrams / bigrams"),
    ("rep_2", "rep-2", "repeated bigrams; lower is better"),
    ("rep_4", "rep-4", "repeated 4-grams; lower is better"),
    ("repetition_loop_rate", "ends in a loop", "share of generations"),
    ("perplexity", "perplexity", "under the scoring model; lower: more likely"),
    ("gen_length", "length", "words per generation"),
)
LABEL_WIDTH = 22


def number(x) -> str:
    """Four significant digits; NaN (an undefined metric) says so."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    return f"{x:.4g}"


def spread(metrics: dict, key: str) -> str:
    """The 95% bootstrap interval over prompts, else the std over samples, else nothing."""
    lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        return f"[{number(lo)}, {number(hi)}]"
    std = metrics.get(f"{key}_std")
    return f"± {number(std)}" if std is not None else ""


def metric_lines(metrics: dict) -> list[str]:
    lines = []
    for key, label, meaning in ROWS:
        if key not in metrics:
            continue
        value = number(metrics[key])
        interval = spread(metrics, key)
        lines.append(f"  {label:<{LABEL_WIDTH}}{value:<10}{interval:<22} {meaning}".rstrip())
    return lines


def table(res: dict) -> str:
    """The lines for one run's result dict (`cli.entry.run`: run_dir, metrics, num_records, strategy)."""
    m = res["metrics"]
    wall = m.get("wall_time_s")
    head = f"decodebench: {res['num_records']} generations, strategy {res['strategy']}"
    lines = [head + (f", {wall:.1f} s" if wall is not None else ""), *metric_lines(m)]
    lines.append(f"results: {res['run_dir']}  (generations.jsonl, metrics.json)")
    wandb_dir: Optional[str] = res.get("wandb_dir")
    if wandb_dir:
        offline = "offline-run-" in str(wandb_dir)
        lines.append(f"W&B offline run; upload it with: wandb sync {wandb_dir}" if offline else f"W&B run: {wandb_dir}")
    return "\n".join(lines)


def print_summary(res: dict, file: Optional[IO[str]] = None) -> None:
    print(table(res), file=file or sys.stderr, flush=True)
