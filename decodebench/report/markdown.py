"""The leaderboard as markdown: the table, failed points, sample generations.

Table cells are inert text: HTML becomes entities, markdown punctuation is backslash-escaped, newlines
become spaces; generations sit in fenced blocks longer than any backtick run
inside them. Plots live in the HTML page only.
"""

from __future__ import annotations

import re
from typing import Any

from decodebench.report.model import Report, _any_failed, _status, arrow, describe, fmt_stat



# What can turn text into markup inside a table cell or list item (intraword `_` cannot in GFM).
_MD_PUNCT = re.compile(r"([\\`*\[\]|~])")


def md_cell(text: Any) -> str:
    """Any run, model or dataset string as inert markdown text: HTML (`<script>`) becomes entities, markdown
    punctuation (links, emphasis, code, table pipes) is backslash-escaped, newlines become spaces."""
    s = " ".join(str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(r"\\\1", s)


def _fence(text: str) -> str:
    ticks = "`" * max(3, 1 + max((len(t) for t in re.findall(r"`+", text)), default=0))
    return f"{ticks}text\n{text}\n{ticks}"


def format_markdown(report: Report) -> str:
    metrics, star, status = report.shown_metrics, report.pareto is not None, _any_failed(report)
    head = (["★"] if star else []) + ["setting", "seeds"] + [md_cell(m + arrow(m)) for m in metrics]
    head += ["status"] if status else []
    lines = ["# decodebench leaderboard", "", md_cell(describe(report)), "",
             "Sources: " + ", ".join(md_cell(s) for s in report.sources) + ". Plots: leaderboard.html.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        cells = (["★" if r.pareto else ""] if star else []) + [md_cell(r.label), str(len(r.runs)) if r.ok else ""]
        cells += [fmt_stat(r.stats.get(m)) for m in metrics] + ([md_cell(_status(r))] if status else [])
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in report.rows if not r.ok]
    if failed:
        lines += ["", "## Failed grid points", ""]
        lines += [f"- {md_cell(r.label)} ({md_cell(r.runs[0].dir)}): {md_cell(r.error)}" for r in failed]
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
