"""The leaderboard as CSV: one row per setting, plain numbers, empty cell = missing.

Columns: `rank`, `setting`, `strategy`, `status` (ok | failed), `pareto` (1 | 0 | empty when no pair),
`n_seeds`, `seeds` (space-separated), one column per varying setting key, then for every metric `m`:
`m_mean`, `m_std` (over seeds; empty with one seed), `m_ci_low`, `m_ci_high` (the run's own interval;
one-seed rows only); then `error` and `runs` (run directories, `;`-separated).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from decodebench.report.model import Report


def csv_records(report: Report) -> list[dict[str, Any]]:
    """The CSV rows as plain dicts (None = empty cell); also what write_leaderboard returns."""
    keys = list(dict.fromkeys(k for r in report.rows for k in r.setting))
    out = []
    for rank, r in enumerate(report.rows, 1):
        rec: dict[str, Any] = {"rank": rank, "setting": r.label, "strategy": r.strategy,
                               "status": "ok" if r.ok else "failed",
                               "pareto": None if r.pareto is None else int(r.pareto),
                               "n_seeds": len(r.runs), "seeds": " ".join(map(str, r.seeds))}
        rec.update({k: r.setting.get(k) for k in keys})
        for m in report.metrics:
            s = r.stats.get(m)
            rec.update({f"{m}_mean": s and s.mean, f"{m}_std": s and s.std, f"{m}_ci_low": s and s.lo,
                        f"{m}_ci_high": s and s.hi})
        rec["error"] = r.error
        rec["runs"] = ";".join(str(x.dir) for x in r.runs)
        out.append(rec)
    return out


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    cols = list(dict.fromkeys(k for rec in records for k in rec))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for rec in records:
            w.writerow({k: "" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v)
                        for k, v in rec.items()})


