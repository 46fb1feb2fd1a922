"""The leaderboard as markdown: the table, failed points, sample generations.

Table cells escape `\\`, `|` and newlines; generations sit in fenced blocks longer than any backtick run
inside them. Plots live in the HTML page only.
"""

from __future__ import annotations

import re
from typing import Any

from decodebench.report.model import Report, _any_failed, _status, arrow, describe, fmt_stat



def md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", " ").replace("\r", " ") \
        .replace("\n", " ")


def _fence(text: str) -> str:
    ticks = "`" * max(3, 1 + max((len(t) for t in re.findall(r"`+", text)), default=0))
    return f"{ticks}text\n{text}\n{ticks}"


def format_markdown(report: Report) -> str:
    metrics, star, status = report.shown_metrics, report.pareto is not None, _any_failed(report)
    head = (["★"] if star else []) + ["setting", "seeds"] + [md_cell(m + arrow(m)) for m in metrics]
    head += ["status"] if status else []
    lines = ["# decodebench leaderboard", "", md_cell(describe(report)), "",
             "Sources: " + ", ".join(f"`{md_cell(s)}`" for s in report.sources) + ". Plots: leaderboard.html.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = (["★" if r.pareto else ""] if star else []) + [md_cell(r.label), str(len(r.runs)) if r.ok else ""]
        cells += [fmt_stat(r.stats.get(m)) for m in metrics] + ([md_cell(_status(r))] if status else [])
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in report.rows if not r.ok]
    if failed:
        lines += ["", "## Failed grid points", ""]
        lines += [f"- {md_cell(r.label)} (`{md_cell(r.runs[0].dir)}`): {md_cell(r.error)}" for r in failed]
    if any(r.samples for r in report.rows):
        lines += ["", "## Sample generations"]
    for r in report.rows:
        if r.samples:
            lines += ["", f"### {md_cell(r.label)}"]
        for s in r.samples:
            lines += ["", f"Prompt {md_cell(s['prompt_id'])}:", "", _fence(str(s["prompt"] or "")), "",
                      f"Generation ({md_cell(s['num_tokens'])} tokens, {md_cell(s['finish_reason'])}):", "",
                      _fence(str(s["text"] or ""))]
    return "\n".join(lines) + "\n"
