"""A study's objective per point, computed once with the model still loaded, and cached beside the point.

Per-item metrics (coherence, answer_match, rep-n, ...) give one value per prompt: the scorer's aggregate over
that prompt's rows (its samples). A method's dev and test scores are the means of those values over the
dev and test prompts, so the score, its bootstrap interval and the paired test all read the same numbers.
Corpus-level metrics (MAUVE, distinct-n, self-BLEU) have no per-prompt value: the scorer runs on the dev
prompts' rows and on the test prompts' rows, and there is no interval or paired test. A task metric
(`task/<task>/<metric>[/<filter>]`) reads the per-document scores of task_samples.jsonl; its split is by
document id. A point with a selector (self-consistency) is scored on its selected answers (selected.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from decodebench import results
from decodebench.scorers.plan import ScorerPlan
from decodebench.scorers.statistics import build_inputs, normalize_records

SCORES = "study_scores.json"
SELECTED = "selected.jsonl"
NO_BOOTSTRAP = {"samples": 0, "seed": None, "confidence": 0.95}


def objective_entry(plan: ScorerPlan, metric: str) -> tuple[Any, dict, str]:
    """(scorer, its options, the metric's name inside the scorer) of the objective."""
    base = metric.removeprefix("selected_")
    for scorer, options in plan.entries:
        if base in scorer.metric_names:
            return scorer, dict(options), base.removeprefix(scorer.prefix)
    raise ValueError(f"study.select.metric: no scorer in scorers.names computes {base!r}")


def point_records(run_dir: Path, selected: bool) -> list[dict]:
    path = run_dir / (SELECTED if selected else results.GENERATIONS)
    return results.read_jsonl(path)


def per_prompt_values(records: list[dict], scorer, options: dict, name: str, common: dict) -> dict:
    """prompt id -> the scorer's aggregate over that prompt's rows (NaN where it has nothing to say)."""
    recs = normalize_records(records)
    raw = scorer.fn(build_inputs(recs, label="", **common), **options)
    ids = [r["prompt_id"] for r in recs]
    out = {}
    for pid in dict.fromkeys(ids):
        rows = np.array([i for i, x in enumerate(ids) if x == pid])
        agg = scorer.aggregate({k: np.asarray(v, dtype=np.float64)[rows] for k, v in raw.items()}, **options)
        out[str(pid)] = float(np.asarray(agg[name], dtype=np.float64))
    return out


def task_values(run_dir: Path, metric: str) -> dict:
    """document id -> its score, from task_samples.jsonl (`task/<task>/<metric>[/<filter>]`)."""
    parts = metric.split("/")
    if len(parts) not in (3, 4):
        raise ValueError(f"study.select.metric {metric!r}: a task metric is task/<task>/<metric>[/<filter>]")
    task, name, filt = parts[1], parts[2], parts[3] if len(parts) == 4 else "none"
    out = {}
    for r in results.read_jsonl(run_dir / "task_samples.jsonl"):
        if r.get("task") == task and r.get("filter", "none") == filt and name in r:
            out[str(r["doc_id"])] = float(r[name])
    if not out:
        raise ValueError(f"study.select.metric {metric!r}: {run_dir}/task_samples.jsonl has no such scores")
    return out


def _mean(d: dict, ids: list) -> float:
    vals = [d[i] for i in ids if i in d and not np.isnan(d[i])]
    return float(np.mean(vals)) if vals else float("nan")


def _subset_score(plan_entry: tuple, records: list[dict], ids: set, name: str, common: dict) -> float:
    sub = [r for r in records if str(r["prompt_id"]) in ids]
    if not sub:
        return float("nan")
    plan = ScorerPlan(entries=(plan_entry,), bootstrap=NO_BOOTSTRAP)
    return float(plan.score(sub, **common)[name])


class PointScorer:
    """Scores points for one study: the objective per prompt, dev and test scores, the test set's metrics."""

    def __init__(self, plan: ScorerPlan, metric: str, common: dict, key: dict):
        self.plan, self.metric, self.common, self.key = plan, metric, common, key
        self.task = metric.startswith("task/")
        if not self.task:
            self.scorer, self.options, self.name = objective_entry(plan, metric)

    def values(self, run_dir: Path, selected: bool) -> Optional[dict]:
        """Per prompt (or document) values; None for a corpus-level metric."""
        if self.task:
            return task_values(run_dir, self.metric)
        if not self.scorer.per_item:
            return None
        return per_prompt_values(point_records(run_dir, selected), self.scorer, self.options, self.name, self.common)

    def score(self, run_dir: Path, selected: bool, dev: list, test: list) -> dict:
        """{"per_prompt", "dev", "test"}, from the cache when it was made for the same objective and split."""
        cache = run_dir / SCORES
        if cache.is_file():
            got = json.loads(cache.read_text())
            if got.get("key") == self.key:  # JSON has no NaN: the writer stored None
                nan = float("nan")
                pp = got["per_prompt"]
                return {**got, "dev": nan if got["dev"] is None else got["dev"],
                        "test": nan if got["test"] is None else got["test"],
                        "per_prompt": None if pp is None else {k: nan if v is None else v for k, v in pp.items()}}
        vals = self.values(run_dir, selected)
        if vals is not None:
            out = {"per_prompt": vals, "dev": _mean(vals, dev), "test": _mean(vals, test)}
        else:
            recs = point_records(run_dir, selected)
            entry = (self.scorer, self.options)
            out = {"per_prompt": None, "dev": _subset_score(entry, recs, set(dev), self.metric, self.common),
                   "test": _subset_score(entry, recs, set(test), self.metric, self.common)}
        out["key"] = self.key
        results.write_json_atomic(cache, out)
        return out

    def test_metrics(self, run_dir: Path, selected: bool, test: list) -> dict:
        """Every scorer's metrics on the test prompts' rows (with the scorers' own bootstrap intervals); a point
        with a selector on its selected answers, under the same names (its rows are what it outputs)."""
        if self.task:
            return {}
        cache = run_dir / SCORES
        got = json.loads(cache.read_text()) if cache.is_file() else {}
        if got.get("key") == self.key and "test_metrics" in got:  # a resumed study does not score them again
            return got["test_metrics"]
        sub = [r for r in point_records(run_dir, selected) if str(r["prompt_id"]) in set(test)]
        out = self.plan.score(sub, **self.common) if sub else {}
        if got.get("key") == self.key:
            results.write_json_atomic(cache, {**got, "test_metrics": out})
        return out
