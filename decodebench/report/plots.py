"""Plots of a leaderboard `Report` as PNG bytes, for embedding in the HTML page.

Uses matplotlib's object API with the Agg canvas (`Figure.savefig`), never pyplot: no global backend
switch, no figure registry to leak, safe inside a long sweep process.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from decodebench.report.figures import Plot, _colors, _png  # noqa: F401  (Plot: the views' type)

if TYPE_CHECKING:
    from decodebench.report.model import Report

KEY_METRICS = ("mauve", "perplexity", "diversity", "rep_2", "tokens_per_s", "gen_length")
MAX_PANELS = 6


def _better(up: bool) -> str:
    return "higher is better" if up else "lower is better"


def frontier(report: "Report") -> Optional[Plot]:
    """Quality against diversity, one point per setting numbered as the table's # column (the key beside
    the plot names them), a line through the Pareto front. Settings close together in a sweep land on top
    of each other; their numbers are placed where they cover no other number or point."""
    if report.pareto is None:
        return None
    q, q_up, d, d_up = report.pareto
    rank = {id(r): i for i, r in enumerate(report.rows, 1)}
    rows = [r for r in report.rows if r.ok and q in r.stats and d in r.stats]
    if not rows:
        return None
    from matplotlib.figure import Figure

    key_lines = [f"{rank[id(r)]:>3}  {r.label}" for r in rows]
    width = 7.5 + min(4.0, 0.065 * max(len(s) for s in key_lines))
    fig = Figure(figsize=(width, max(5.2, 0.8 + 0.15 * len(rows))))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.7 / width, right=6.9 / width, bottom=0.6 / fig.get_figheight(), top=0.95)
    colors = _colors(rows)
    for name, color in colors.items():
        mine = [r for r in rows if r.strategy == name]
        ax.errorbar([r.stats[q].mean for r in mine], [r.stats[d].mean for r in mine],
                    xerr=[r.stats[q].std or 0.0 for r in mine], yerr=[r.stats[d].std or 0.0 for r in mine],
                    fmt="o", color=color, label=name, capsize=2, markersize=6)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.stats[q].mean)
    if front:
        ax.plot([r.stats[q].mean for r in front], [r.stats[d].mean for r in front], "--", color="0.4",
                marker="*", markersize=12, label="Pareto front", zorder=0)
    ax.margins(0.08)
    _number_points(ax, [((r.stats[q].mean, r.stats[d].mean), rank[id(r)]) for r in rows])
    fig.text(7.05 / width, 0.95, "#  setting\n" + "\n".join(key_lines), va="top", ha="left", fontsize=8,
             family="monospace", color="0.2")
    ax.set_xlabel(f"{q} ({_better(q_up)})")
    ax.set_ylabel(f"{d} ({_better(d_up)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot(f"Quality–diversity frontier: {q} vs {d}",
                f"Each point is a setting, numbered as the table's # column (mean over seeds; bars: std). ★ and the "
                f"dashed line: the Pareto front ({q}: {_better(q_up)}; {d}: {_better(d_up)}).", _png(fig, tight=False))


# offsets (in pixels, from the point) tried in turn for a number's lower-left corner; w, h: its size
_SPOTS = ((5, 3), (5, -1), (-1, 3), (-1, -1), (2, 8), (2, -6), (10, 1), (-1, 1))


def _number_points(ax, points: list[tuple[tuple[float, float], int]]) -> None:
    """Write each point's number next to it, where it overlaps no other number and no marker; points that
    share a spot (identical results) share one label, "2,5". Sizes in pixels at the figure's dpi."""
    ax.get_xlim()  # settle the autoscaled limits, so transData maps to final pixels
    px = [(tuple(ax.transData.transform(xy)), xy, n) for xy, n in points]
    groups: list[tuple[tuple[float, float], tuple[float, float], list[int]]] = []
    for (x, y), xy, n in px:
        near = next((g for g in groups if abs(g[0][0] - x) < 4 and abs(g[0][1] - y) < 4), None)
        if near is None:
            groups.append(((x, y), xy, [n]))
        else:
            near[2].append(n)
    dots = [(x - 4, y - 4, x + 4, y + 4) for (x, y), _, _ in px]
    placed: list[tuple[float, float, float, float]] = []
    pt = ax.figure.dpi / 72  # pixels per point
    char_w, h = 8.5 * 0.62 * pt, 8.5 * 1.15 * pt
    box = ax.bbox.extents
    for (x, y), xy, ns in groups:
        text = ",".join(map(str, ns))
        w = char_w * len(text)
        spots = [(x + dx * (w if dx < 0 else 1), y + dy * (h if dy < 0 else 1)) for dx, dy in _SPOTS]
        spots += [(x + r * c, y + r * s) for r in (14, 22, 32) for c, s in ((1, 1), (1, -1), (-2, 1), (-2, -1), (0, 1.5))]
        for sx, sy in spots:
            b = (sx, sy, sx + w, sy + h)
            clear = not any(_hit(b, o) for o in placed + dots) and box[0] <= b[0] and b[2] <= box[2] \
                and box[1] <= b[1] and b[3] <= box[3]
            if clear:
                break
        else:
            sx, sy = x + 5, y + 3
        placed.append((sx, sy, sx + w, sy + h))
        far = abs(sx - x) > 12 or abs(sy - y) > 12
        ax.annotate(text, xy, xytext=((sx - x) / pt, (sy - y) / pt), textcoords="offset points",
                    fontsize=8.5, color="0.15", va="bottom", ha="left",
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6) if far else None)


def _hit(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
    from decodebench.report.task_plots import render as task_plots  # accuracy against diversity, with task metrics

    plots = ([frontier(report)] + task_plots(report) + [against_param(report, p) for p in report.swept]
             + [throughput(report)])
    return [p for p in plots if p is not None]
