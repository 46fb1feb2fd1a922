"""The human-readable views of a leaderboard `Report`: the markdown page and the self-contained HTML page.

The HTML page is one file: inline CSS, plots as base64 PNG, no scripts, nothing fetched (a
Content-Security-Policy forbids both, as a second wall behind escaping). Every piece of text that comes
from a run, a model or a dataset goes through `html.escape`; in markdown, table cells escape `|` and
newlines and generations sit in fenced blocks longer than any backtick run inside them.
"""

from __future__ import annotations

import base64
import html
import re
import time
from typing import Any, Optional

from decodebench.report import Report, Row, Stat, arrow, direction

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


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


# ---------------------------------------------------------------- markdown


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


# ---------------------------------------------------------------- HTML

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; color: #1d232a; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; }
.meta { color: #57606a; margin: 4px 0; }
.scroll { overflow-x: auto; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eaeef2; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; font-weight: 600; }
th.sorted { background: #ddf4ff; }
td.setting, th.setting, td.status { text-align: left; }
td.setting { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
td.star { color: #bf8700; text-align: center; font-size: 16px; }
tr.pareto td { background: #fffbe6; }
tr.failed td { background: #ffebe9; color: #82071e; }
td.status { white-space: normal; text-align: left; }
.sub { color: #6e7781; font-size: 11.5px; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 13px; }
details { border: 1px solid #d0d7de; border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
summary { cursor: pointer; font-family: ui-monospace, monospace; font-size: 13px; }
.sample { border-top: 1px solid #eaeef2; padding: 6px 0; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px 8px; border-radius: 4px; }
pre.prompt { background: #f6f8fa; color: #57606a; } pre.text { background: #f0fff4; }
footer { color: #8c959f; font-size: 12px; margin-top: 32px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(report: Report) -> str:
    """Failed rows put their error across the metric cells (a "result" column when there are none)."""
    metrics, star = report.shown_metrics or ["result"], report.pareto is not None
    sort = report.sort[0] if report.sort else None
    head = ["<th>#</th>"] + (["<th title='Pareto-optimal'>★</th>"] if star else []) + \
        ["<th class=setting>setting</th>", "<th>seeds</th>"]
    for m in metrics:
        d = direction(m)
        tip = _better(d) if d is not None else "no direction"
        head.append(f"<th class='{'sorted' if m == sort else ''}' title='{_e(tip)}'>{_e(m + arrow(m))}</th>")
    body = []
    for i, r in enumerate(report.rows, 1):
        cls = "failed" if not r.ok else ("pareto" if r.pareto else "ok")
        seeds = _e(", ".join(map(str, r.seeds)) or "-")
        cells = [f"<td>{i}</td>"] + ([f"<td class=star>{'★' if r.pareto else ''}</td>"] if star else [])
        cells += [f"<td class=setting>{_e(r.label)}</td>",
                  f"<td title='seeds: {seeds}'>{len(r.runs) if r.ok else ''}</td>"]
        if r.ok:
            cells += [f"<td>{fmt_stat(r.stats.get(m), '<span class=sub>{}</span>')}</td>" for m in metrics]
        else:
            cells.append(f"<td class=status colspan={len(metrics)}>{_e(_status(r))}</td>")
        body.append(f"<tr class={cls}>{''.join(cells)}</tr>")
    return (f"<div class=scroll><table id=leaderboard><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>")


def _plots(report: Report) -> str:
    try:
        from decodebench.report_plots import render
    except ImportError as e:  # matplotlib is a declared dependency; say so rather than fail the report
        return f"<p class=meta>No plots: {_e(e)} (pip install matplotlib).</p>"
    out = []
    for p in render(report):
        data = base64.b64encode(p.png).decode("ascii")
        out.append(f"<figure><figcaption><b>{_e(p.title)}</b></figcaption>"
                   f"<img alt='{_e(p.title)}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{_e(p.caption)}</figcaption></figure>")
    return "\n".join(out) or "<p class=meta>No plots: no metric to plot.</p>"


def _samples(report: Report) -> str:
    out = []
    for r in report.rows:
        if not r.samples:
            continue
        items = [f"<div class=sample><div class=sub>prompt {_e(s['prompt_id'])} · sample {_e(s['sample_index'])} · "
                 f"{_e(s['num_tokens'])} tokens · {_e(s['finish_reason'])}</div>"
                 f"<pre class=prompt>{_e(s['prompt'] or '')}</pre><pre class=text>{_e(s['text'] or '')}</pre></div>"
                 for s in r.samples]
        out.append(f"<details><summary>{_e(r.label)}</summary>{''.join(items)}</details>")
    return "\n".join(out)


def format_html(report: Report) -> str:
    failed = [r for r in report.rows if not r.ok]
    parts = [
        "<!doctype html>", "<html lang=en><head><meta charset=utf-8>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        "<title>decodebench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>decodebench leaderboard</h1>", f"<p class=meta>{_e(describe(report))}</p>",
        "<p class=meta>Sources: " + ", ".join(f"<code>{_e(s)}</code>" for s in report.sources) + "</p>",
        _table(report), "<h2>Plots</h2>", _plots(report),
    ]
    if failed:
        parts += ["<h2>Failed grid points</h2><ul>"] + [
            f"<li><code>{_e(r.label)}</code> ({_e(r.runs[0].dir)}): {_e(r.error)}</li>" for r in failed] + ["</ul>"]
    samples = _samples(report)
    if samples:
        parts += ["<h2>Sample generations</h2>", samples]
    parts += [f"<footer>decodebench report, {_e(time.strftime('%Y-%m-%d %H:%M'))}</footer></body></html>"]
    return "\n".join(parts) + "\n"
