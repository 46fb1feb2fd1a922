"""Leaderboards over run and sweep directories, as views of the records on disk.

    runs.py         run directories -> `Run` (settings, seed, metrics or error)
    model.py        runs -> rows (seeds pooled), sort, Pareto front, sample generations -> `Report`
    markdown.py, html_page.py, csv_table.py, plots.py   views of a `Report`
    leaderboard.py  write_leaderboard(paths) and the `report` verb
"""

from decodebench.report.leaderboard import OUTPUTS, main, write_leaderboard
from decodebench.report.model import build_report

__all__ = ["OUTPUTS", "build_report", "main", "write_leaderboard"]
