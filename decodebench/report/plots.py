"""Plots of a leaderboard `Report` as PNG bytes, for embedding in the HTML page.

Uses matplotlib's object API with the Agg canvas (`Figure.savefig`), never pyplot: no global backend
switch, no figure registry to leak, safe inside a long sweep process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from decodebench.report.model import Report, Row

KEY_METRICS = ("mauve", "perplexity", "diversity", "rep_2", "tokens_per_s", "gen_length")
MAX_PANELS = 6


@dataclass
class Plot:
    title: str
    caption: str
    png: bytes


def _png(fig, tight: bool = True) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _colors(rows: list["Row"]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    names = list(dict.fromkeys(r.strategy for r in rows))
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _better(up: bool) -> str:
    return "higher is better" if up else "lower is better"


def frontier(report: "Report") -> Optional[Plot]:
    """Quality against diversity, one labelled point per setting, a line through the Pareto front."""
    if report.pareto is None:
        return None
    q, q_up, d, d_up = report.pareto
    rows = [r for r in report.rows if r.ok and q in r.stats and d in r.stats]
    if not rows:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.2))
    ax = fig.subplots()
    colors = _colors(rows)
    for name, color in colors.items():
        mine = [r for r in rows if r.strategy == name]
        ax.errorbar([r.stats[q].mean for r in mine], [r.stats[d].mean for r in mine],
                    xerr=[r.stats[q].std or 0.0 for r in mine], yerr=[r.stats[d].std or 0.0 for r in mine],
                    fmt="o", color=color, label=name, capsize=2, markersize=6)
    for r in rows:
        ax.annotate(r.label, (r.stats[q].mean, r.stats[d].mean), xytext=(5, 4), textcoords="offset points",
                    fontsize=7, color="0.25")
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.stats[q].mean)
    if front:
        ax.plot([r.stats[q].mean for r in front], [r.stats[d].mean for r in front], "--", color="0.4",
                marker="*", markersize=12, label="Pareto front", zorder=0)
    ax.set_xlabel(f"{q} ({_better(q_up)})")
    ax.set_ylabel(f"{d} ({_better(d_up)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot(f"Quality–diversity frontier: {q} vs {d}",
                f"Each point is a setting (mean over seeds; bars: std). ★ and the dashed line: the Pareto front "
                f"({q}: {_better(q_up)}; {d}: {_better(d_up)}).", _png(fig))


def key_metrics(report: "Report") -> list[str]:
    first = ([report.sort[0]] if report.sort else []) + (list(report.pareto[0::2]) if report.pareto else [])
    shown = set(report.shown_metrics)
    return [m for m in dict.fromkeys(first + list(KEY_METRICS)) if m in shown][:MAX_PANELS]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def against_param(report: "Report", param: str) -> Optional[Plot]:
    """One small panel per key metric against a swept numeric parameter; one line per strategy (and
    per value of any other varying setting)."""
    from decodebench.report.model import arrow

    rows = [r for r in report.rows if r.ok and _is_number(r.setting.get(param))]
    metrics = [m for m in key_metrics(report) if any(m in r.stats for r in rows)]
    if len(rows) < 2 or not metrics:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator

    lines: dict[str, list] = {}
    for r in rows:
        rest = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in r.setting.items() if k != param and v is not None]
        lines.setdefault(" ".join([r.strategy] + rest), []).append(r)
    # Layout by hand: tight_layout and bbox_inches="tight" each cost another full draw of every panel.
    ncols, legend_rows = min(3, len(metrics)), math.ceil(len(lines) / 3)
    nrows = math.ceil(len(metrics) / ncols)
    width, height = 4.2 * ncols, 3.1 * nrows + 0.25 * legend_rows + 0.2
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.65 / width, right=0.98, top=1 - 0.35 / height,
                        bottom=(0.55 + 0.25 * legend_rows) / height, wspace=0.3, hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    xs = [r.setting[param] for r in rows]
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 50
    for ax, m in zip(axes, metrics):
        for label, members in lines.items():
            pts = sorted(((r.setting[param], r.stats[m]) for r in members if m in r.stats), key=lambda p: p[0])
            if pts:
                ax.errorbar([x for x, _ in pts], [s.mean for _, s in pts], yerr=[s.std or 0.0 for _, s in pts],
                            marker="o", markersize=4, capsize=2, label=label)
        ax.set_title(m + arrow(m), fontsize=10)
        ax.set_xlabel(param, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks double the drawing time
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    return Plot(f"Metrics against {param}", f"Mean over seeds (bars: std) at each value of {param}.",
                _png(fig, tight=False))


def throughput(report: "Report") -> Optional[Plot]:
    """tokens_per_s per setting, coloured by strategy."""
    rows = [r for r in report.rows if r.ok and "tokens_per_s" in r.stats]
    if not rows:
        return None
    from matplotlib.figure import Figure

    colors = _colors(rows)
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * len(rows)))
    ax = fig.subplots()
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r.stats["tokens_per_s"].mean for r in rows], xerr=[r.stats["tokens_per_s"].std or 0.0 for r in rows],
            color=[colors[r.strategy] for r in rows], capsize=2)
    ax.set_yticks(ys, [r.label for r in rows], fontsize=8)
    ax.set_xlabel("tokens_per_s (higher is better)")
    ax.grid(axis="x", alpha=0.3)
    return Plot("Throughput", "Generated tokens per second of decoding, per setting (bars: std over seeds); "
                "compare only runs on the same device.", _png(fig))


def render(report: "Report") -> list[Plot]:
    """Every plot the report's data supports, in page order."""
    plots = [frontier(report)] + [against_param(report, p) for p in report.swept] + [throughput(report)]
    return [p for p in plots if p is not None]
