"""Task accuracy against diversity, one point per setting: the figure of the min-p paper (Nguyen et al. 2024).

A panel per task metric (lm-eval's, then maj@N and pass@k), diversity on x. Part of the leaderboard page
when the runs carry task metrics (decodebench/report_plots.py calls `render`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from decodebench.report.model import Report

DIVERSITY = "diversity"
MAX_PANELS = 6


def task_metrics(report: "Report") -> list[str]:
    """The task metrics to plot: lm-eval's first, then maj@N and pass@k; companions never."""
    names = [m for m in report.metrics if m.startswith("task/")]
    return sorted(names, key=lambda m: ("/maj@" in m, "/pass@" in m))[:MAX_PANELS]


def accuracy_vs_diversity(report: "Report") -> Optional["object"]:
    from decodebench.report.figures import Plot, _colors, _png

    metrics = task_metrics(report)
    rows = [r for r in report.rows if r.ok and DIVERSITY in r.stats and any(m in r.stats for m in metrics)]
    if not rows or not metrics:
        return None
    from matplotlib.figure import Figure

    ncols = min(2, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.subplots_adjust(hspace=0.45, wspace=0.3)  # room for each row's x label under the next row's title
    colors = _colors(rows)
    for ax, m in zip(axes, metrics):
        for name, color in colors.items():
            mine = [r for r in rows if r.strategy == name and m in r.stats]
            if not mine:
                continue
            ys = [r.stats[m].mean for r in mine]
            # spread over seeds when there are several, else the run's own 95% interval
            err = [[y - (r.stats[m].lo if r.stats[m].lo is not None else y) for y, r in zip(ys, mine)],
                   [(r.stats[m].hi if r.stats[m].hi is not None else y) - y for y, r in zip(ys, mine)]]
            if any(r.stats[m].std is not None for r in mine):
                err = [[r.stats[m].std or 0.0 for r in mine]] * 2
            ax.errorbar([r.stats[DIVERSITY].mean for r in mine], ys, yerr=err, fmt="o", color=color, label=name,
                        capsize=2, markersize=5)
            for r, y in zip(mine, ys):
                ax.annotate(r.label, (r.stats[DIVERSITY].mean, y), xytext=(4, 3), textcoords="offset points",
                            fontsize=7, color="0.25")
        ax.set_title(m.removeprefix("task/"), fontsize=10)
        ax.set_xlabel("diversity (higher is more diverse)", fontsize=9)
        ax.set_ylabel("score (higher is better)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return Plot("Task accuracy against diversity",
                "Each point is a setting: its task score (bars: std over seeds, or the 95% interval from the "
                "task's stderr) against the diversity of its open-ended generations.", _png(fig))


def render(report: "Report") -> list:
    p = accuracy_vs_diversity(report)
    return [p] if p is not None else []
