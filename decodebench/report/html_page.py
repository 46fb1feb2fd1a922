"""The leaderboard as one self-contained HTML page: inline CSS, plots as base64 PNG, no scripts, nothing
fetched (a Content-Security-Policy forbids both, as a second wall behind escaping). Every piece of text that
comes from a run, a model or a dataset goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any

from decodebench.report.model import Report, _better, _status, arrow, describe, direction, fmt_stat

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---------------------------------------------------------------- HTML

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; color: #1d232a; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; }
.meta { color: #57606a; margin: 4px 0; }
/* a wide table scrolls inside its own box; #, ★ and setting stay in view (sticky, fixed widths) */
.scroll { overflow-x: auto; max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eaeef2; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; font-weight: 600; }
th.sorted { background: #ddf4ff; }
.pin { position: sticky; z-index: 1; background: #fff; box-sizing: border-box; }
th.pin { z-index: 2; background: #f6f8fa; }
/* the pinned columns' left offsets are their fixed widths: the content must fit them, padding included */
.pin0 { left: 0; width: 40px; min-width: 40px; max-width: 40px; padding: 5px 4px; text-align: center; }
.pin1 { left: 40px; }
td.star.pin1, th.pin1:not(.setting) { width: 30px; min-width: 30px; max-width: 30px; padding: 5px 2px; }
.pin2 { left: 70px; }
.pin.setting { box-shadow: inset -1px 0 #d0d7de; }
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
    pin = f"pin {'pin2' if star else 'pin1'}"  # the setting column's left edge: after # (and ★)
    head = ["<th class='pin pin0'>#</th>"] + (["<th class='pin pin1' title='Pareto-optimal'>★</th>"] if star else []) + \
        [f"<th class='setting {pin}'>setting</th>", "<th>seeds</th>"]
    for m in metrics:
        d = direction(m)
        tip = _better(d) if d is not None else "no direction"
        head.append(f"<th class='{'sorted' if m == sort else ''}' title='{_e(tip)}'>{_e(m + arrow(m))}</th>")
    body = []
    for i, r in enumerate(report.rows, 1):
        cls = "failed" if not r.ok else ("pareto" if r.pareto else "ok")
        seeds = _e(", ".join(map(str, r.seeds)) or "-")
        cells = [f"<td class='pin pin0'>{i}</td>"] + \
            ([f"<td class='star pin pin1'>{'★' if r.pareto else ''}</td>"] if star else [])
        cells += [f"<td class='setting {pin}'>{_e(r.label)}</td>",
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
        from decodebench.report.plots import render
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
