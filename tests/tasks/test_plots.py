"""The leaderboard's accuracy-against-diversity plot."""

from __future__ import annotations

from decodebench.report.model import Report, Row, Stat
from decodebench.report.plots import render
from decodebench.report.task_plots import accuracy_vs_diversity, task_metrics

ACC = "task/arith/exact_match/strict-match"
MAJ = "task/arith/maj@4/exact_match/strict-match"


def _report(with_diversity: bool = True) -> Report:
    rows = []
    for i, (p, acc, div) in enumerate([(0.5, 0.6, 0.3), (0.9, 0.5, 0.6), (0.95, 0.4, 0.8)]):
        stats = {ACC: Stat(acc, None, acc - 0.05, acc + 0.05), MAJ: Stat(acc + 0.1, 0.02, None, None)}
        if with_diversity:
            stats["diversity"] = Stat(div, None, None, None)
        rows.append(Row(label=f"top_p={p}", strategy="topp", setting={"top_p": p}, runs=[], stats=stats))
    metrics = (["diversity"] if with_diversity else []) + [MAJ, ACC]
    return Report(rows=rows, metrics=metrics, sort=None, pareto=None, swept=[], sources=[])


def test_one_panel_per_task_metric_lm_evals_first():
    assert task_metrics(_report()) == [ACC, MAJ]


def test_plot_is_drawn_and_on_the_page():
    plot = accuracy_vs_diversity(_report())
    assert plot is not None and plot.png.startswith(b"\x89PNG") and "diversity" in plot.title
    assert any(p.title == plot.title for p in render(_report()))


def test_no_plot_without_diversity():
    assert accuracy_vs_diversity(_report(with_diversity=False)) is None
