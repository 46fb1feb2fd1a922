"""A study's leaderboard: one row per method at its chosen setting, best per column marked, the full grid
below, and the study's plots; markdown, CSV and one self-contained HTML page, all views of study.json,
study_result.json and the points' metrics.json.

The summary row of a method shows what it chose (on the dev prompts) and how that setting does on the
test prompts: the objective with its bootstrap interval, the difference to the best method and the paired
test's p-value, then every other metric on the test prompts. The grid table shows every point's dev and
test objective and its metrics over all prompts.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

from decodebench import results
from decodebench.report.html_page import CSP, STYLE
from decodebench.report.model import BOOKKEEPING, COMPANIONS, direction

OUTPUTS = {"markdown": "leaderboard.md", "csv": "leaderboard.csv", "html": "leaderboard.html"}
STAR = "★"
# speed and memory of a fused point are shares of the fused batches': each point's metrics.json has them
PERF = ("latency", "memory", "forward_passes", "tokens_per", "tokens_processed", "row_step", "time_to", "_s")


def load(study_dir: Path) -> dict:
    """study.json + study_result.json + each point's metrics: what every view reads."""
    meta = json.loads((study_dir / "study.json").read_text())
    res = json.loads((study_dir / "study_result.json").read_text())
    metrics = {p["name"]: results.read_metrics(study_dir / p["name"]) for p in res["points"]}
    return {"meta": meta, "result": res, "metrics": metrics}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _metric_cols(dicts: list[dict]) -> list[str]:
    cols = list(dict.fromkeys(k for d in dicts for k, v in d.items() if _num(v)))
    return [c for c in cols if not c.endswith(COMPANIONS) and c not in BOOKKEEPING
            and not any(k in c for k in PERF) and c not in ("rows", "num_records")]


def summary_rows(data: dict) -> tuple[list[str], list[dict]]:
    """(metric columns, one row per method): its choice, the objective on test and the paired test."""
    res = data["result"]
    rows, tm = [], res["test_metrics"]
    cols = _metric_cols(list(tm.values()))
    for c in res["choices"]:
        p = c["point"]
        row = {"method": c["method"], "setting": p["label"], "points tried": c["budget"],
               "scored on": "selected answers" if p["name"] in res.get("selected", ()) else "every row",
               "dev": p["dev"], "test": p["test"], "test_ci_low": c["test_ci"][0], "test_ci_high": c["test_ci"][1],
               "diff_vs_best": 0.0 if c["best"] else c["diff"], "p_value": c["p_value"],
               "sensitivity": c["sensitivity"], "best": c["best"]}
        row.update({m: tm.get(p["name"], {}).get(m) for m in cols})
        rows.append(row)
    return cols, rows


def grid_rows(data: dict) -> tuple[list[str], list[dict]]:
    res, metrics = data["result"], data["metrics"]
    chosen = {c["point"]["name"] for c in res["choices"]}
    cols = _metric_cols(list(metrics.values()))
    rows = []
    for p in res["points"]:
        m = metrics.get(p["name"]) or {}
        rows.append({"method": p["method"], "setting": p["label"], "point": p["name"], "chosen": p["name"] in chosen,
                     "dev": p["dev"], "test": p["test"], **{c: m.get(c) for c in cols}})
    return cols, rows


def best_marks(rows: list[dict], cols: list[str], objective: tuple[str, bool]) -> dict[str, set]:
    """column -> indices of the rows holding its best value (known directions only)."""
    out = {}
    for c in cols:
        up = objective[1] if c in ("dev", "test") else direction(c)
        vals = [(i, r.get(c)) for i, r in enumerate(rows) if _num(r.get(c))]
        if up is None or len({v for _, v in vals}) < 2:  # nothing to tell apart (the references' own rep-n)
            continue
        best = (max if up else min)(v for _, v in vals)
        out[c] = {i for i, v in vals if v == best}
    return out


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return "–" if v is None else str(v)


def _cell(row: dict, c: str) -> str:
    if c == "test" and _num(row.get("test_ci_low")):
        return f"{fmt(row['test'])} [{fmt(row['test_ci_low'])}, {fmt(row['test_ci_high'])}]"
    return fmt(row.get(c))


SUMMARY_HEAD = ["method", "setting", "scored on", "points tried", "dev", "test", "diff_vs_best", "p_value",
                "sensitivity"]


def summary_head(rows: list[dict]) -> list[str]:
    """"scored on" only where a method is scored on selected answers (self-consistency)."""
    some = any(r.get("scored on") != "every row" for r in rows)
    return [c for c in SUMMARY_HEAD if some or c != "scored on"]
GRID_HEAD = ["method", "setting", "chosen", "dev", "test"]


def describe(data: dict) -> list[str]:
    res = data["result"]
    obj = f"{res['metric']} ({'higher' if res['maximize'] else 'lower'} is better)"
    noise = ("shared noise (common random numbers): every method draws the same noise per prompt, sample and "
             "step, so the comparison is paired" if res["noise"] == "shared"
             else "independent noise: each method's seeds are salted by its name")
    return [f"Objective: {obj}, chosen on {len(res['dev_ids'])} dev prompts, reported on {len(res['test_ids'])} "
            f"test prompts (split by prompt id, dev fraction {res['dev_fraction']:g}).",
            f"Noise: {noise}.",
            f"Test interval: percentile bootstrap over test prompts ({res['bootstrap']} resamples). "
            f"p_value: {res['test']} against the best method ({STAR}); diff_vs_best: mean per-prompt difference.",
            "sensitivity: max - min of the dev objective over the method's grid."]


def markdown(data: dict) -> str:
    obj = (data["result"]["metric"], data["result"]["maximize"])
    cols, rows = summary_rows(data)
    lines = [f"# Study {data['result']['name']}", "", *describe(data), ""]
    lines += _md_table(rows, summary_head(rows) + cols, best_marks(rows, ["dev", "test", *cols], obj), star="best")
    gcols, grows = grid_rows(data)
    lines += ["", "## Full grid (metrics over all prompts)", ""]
    lines += _md_table(grows, GRID_HEAD + gcols, best_marks(grows, ["dev", "test", *gcols], obj))
    if data["result"]["missing"]:
        lines += ["", "Not finished: " + ", ".join(data["result"]["missing"])]
    return "\n".join(lines) + "\n"


def _md_table(rows: list[dict], head: list[str], marks: dict, star: Optional[str] = None) -> list[str]:
    def cell(i, r, c):
        s = _cell(r, c).replace("|", "\\|")
        s = f"**{s}**" if i in marks.get(c, ()) else s
        return f"{STAR} {s}" if star and c == "method" and r.get(star) else s

    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(i, r, c) for c in head) + " |" for i, r in enumerate(rows)]
    return out


def _html_table(rows: list[dict], head: list[str], marks: dict, star: Optional[str] = None) -> str:
    e = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    th = "".join(f"<th class=setting>{e(c)}</th>" if c in ("method", "setting") else f"<th>{e(c)}</th>" for c in head)
    body = []
    for i, r in enumerate(rows):
        tds = []
        for c in head:
            s = e(_cell(r, c))
            s = f"<b>{s}</b>" if i in marks.get(c, ()) else s
            if star and c == "method" and r.get(star):
                s = f"<span class=star>{STAR}</span> {s}"
            tds.append(f"<td class=setting>{s}</td>" if c in ("method", "setting") else f"<td>{s}</td>")
        cls = " class=pareto" if (star and r.get(star)) or r.get("chosen") else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f"<div class=scroll><table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def figures(data: dict) -> str:
    try:
        from decodebench.report.study_plots import render

        plots = render(data)
    except ImportError as e:  # matplotlib is a declared dependency; say so rather than lose the page
        return f"<p class=meta>No plots: {html.escape(str(e))} (pip install matplotlib).</p>"
    return "".join(f"<figure><figcaption><b>{html.escape(p.title)}</b></figcaption><img alt='{html.escape(p.title)}' "
                   f"src='data:image/png;base64,{base64.b64encode(p.png).decode('ascii')}'>"
                   f"<figcaption>{html.escape(p.caption)}</figcaption></figure>" for p in plots)


def page(data: dict) -> str:
    obj = (data["result"]["metric"], data["result"]["maximize"])
    cols, rows = summary_rows(data)
    gcols, grows = grid_rows(data)
    name = html.escape(data["result"]["name"])
    figs = figures(data)
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
             f"<title>decodebench study {name}</title><style>{STYLE} td.setting .star {{ color: #bf8700; }}</style>"
             "</head><body>", f"<h1>Study {name}</h1>",
             *[f"<p class=meta>{html.escape(s)}</p>" for s in describe(data)],
             "<h2>Each method at its chosen setting (test prompts)</h2>",
             _html_table(rows, summary_head(rows) + cols, best_marks(rows, ["dev", "test", *cols], obj), star="best"),
             "<h2>Plots</h2>", figs or "<p class=meta>No plots.</p>",
             "<h2>Full grid (metrics over all prompts)</h2>",
             _html_table(grows, GRID_HEAD + gcols, best_marks(grows, ["dev", "test", *gcols], obj)),
             f"<footer>decodebench study report, {html.escape(time.strftime('%Y-%m-%d %H:%M'))}</footer></body></html>"]
    return "\n".join(parts) + "\n"


def csv_rows(data: dict) -> list[dict]:
    _, rows = summary_rows(data)
    _, grows = grid_rows(data)
    return [{"table": "selected", **r} for r in rows] + [{"table": "grid", **r} for r in grows]


def write_study_board(study_dir: str | Path) -> dict:
    """leaderboard.{md,csv,html} in the study directory; returns their paths and the summary rows."""
    d = Path(study_dir)
    data = load(d)
    files = {k: d / v for k, v in OUTPUTS.items()}
    files["markdown"].write_text(markdown(data), encoding="utf-8")
    recs = csv_rows(data)
    cols = list(dict.fromkeys(k for r in recs for k in r))
    with open(files["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(recs)
    files["html"].write_text(page(data), encoding="utf-8")
    return {k: str(v) for k, v in files.items()}


def log_to_wandb(run, study_dir: Path, group: str) -> None:
    """The summary table to W&B, in the study's group (where each point's run already went); `run`: the
    study's RunSpec (decodebench/specs.py)."""
    from dataclasses import asdict

    from decodebench import wandb_sink

    logger = run.logger_settings()
    if not wandb_sink.enabled(logger):
        return
    cols, rows = summary_rows(load(Path(study_dir)))
    head = SUMMARY_HEAD + ["test_ci_low", "test_ci_high"] + cols
    wandb_sink.log_table(logger, study_dir, "study_summary", head, [[r.get(c) for c in head] for r in rows],
                         group=logger.get("group") or group, job_type="study-summary",
                         name=f"{run.study.name}:summary", config={"study": asdict(run.study)})
