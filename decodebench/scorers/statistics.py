"""Scoring a plan over records: checks, runs (one per sample_index), mean/std over runs, and bootstrap
intervals over prompts for per-item scorers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from .inputs import Inputs
from .spec import Scorer


@dataclass
class Group:
    """The rows of one run (or the references): `inputs`, and `pos[p]` = the row of prompt p or -1."""

    inputs: Inputs
    pos: np.ndarray


def normalize_records(records: list) -> list[dict]:
    """GenerationRecords (or plain dicts with the same keys) -> dicts the scoring code reads."""
    from decodebench.results import GenerationRecord

    if not isinstance(records, list) or not records:
        raise ValueError("no generation records to score")
    out, seen = [], set()
    for i, record in enumerate(records):
        if isinstance(record, GenerationRecord):
            record = record.to_json()
        if not isinstance(record, Mapping) or not isinstance(record.get("text"), str):
            raise ValueError(f"record {i} has no string 'text' field")
        r = dict(record)
        r.setdefault("prompt_id", i)
        r["sample_index"] = r.get("sample_index") or 0
        key = (r["prompt_id"], r["sample_index"])
        if key in seen:
            raise ValueError(f"two records share prompt_id {key[0]!r} and sample_index {key[1]}")
        seen.add(key)
        out.append(r)
    return out


def check_models(plan, models: Mapping[str, tuple[Any, Any]] | None) -> None:
    for scorer, options in plan.entries:
        name = options.get("model")
        if name and name not in (models or {}):
            raise ValueError(f"scorers.{scorer.name}.model is {name!r}, but no such scoring model was passed; "
                             f"pass models={{{name!r}: (model, tokenizer)}} to score")


def with_model(group: Group, name: str, model, tokenizer) -> Group:
    """The group scored under another model: its own tokenizer re-tokenizes prompts and texts (the
    records' token ids belong to the generating tokenizer), and its log-probabilities get their own cache."""
    n = len(group.inputs)
    label = f"{group.inputs.label} [{name}]".strip()
    inputs = replace(group.inputs, model=model, tokenizer=tokenizer, prompt_token_ids=[None] * n,
                     token_ids=[None] * n, label=label, cache={}, gen_logprobs=None)
    return Group(inputs, group.pos)


def check_needs(plan, records: list[dict], model, tokenizer) -> None:
    def users(need: str) -> str:
        return ", ".join(s.name for s, o in plan.entries if need in s.needs_for(o))

    needs = plan.needs
    if "model" in needs and (model is None or tokenizer is None):
        raise ValueError(f"scorers {users('model')} need a model and tokenizer; pass model= and tokenizer=")
    for need, field in (("references", "reference"), ("prompts", "prompt"), ("token_ids", "token_ids")):
        missing = sum(r.get(field) is None for r in records)
        if need in needs and missing:
            raise ValueError(f"scorers {users(need)} need {need}, but {missing} of {len(records)} records have "
                             f"no {field!r}; drop those scorers from scorers.names or provide the field")


def build_inputs(records: list[dict], **common: Any) -> Inputs:
    return Inputs(
        texts=[r["text"] for r in records], prompts=[r.get("prompt") for r in records],
        prompt_token_ids=[r.get("prompt_token_ids") for r in records],
        token_ids=[r.get("token_ids") for r in records], references=[r.get("reference") for r in records],
        gen_logprobs=[r.get("gen_logprobs") for r in records] if any("gen_logprobs" in r for r in records) else None,
        **common,
    )


def make_groups(records: list[dict], common: dict) -> tuple[int, dict[int, Group], Group]:
    prompt_pos: dict[Any, int] = {}
    for r in records:
        prompt_pos.setdefault(r["prompt_id"], len(prompt_pos))
    n_prompts = len(prompt_pos)
    runs: dict[int, Group] = {}
    for sample in sorted({r["sample_index"] for r in records}):
        rows = [r for r in records if r["sample_index"] == sample]
        pos = np.full(n_prompts, -1)
        for j, r in enumerate(rows):
            pos[prompt_pos[r["prompt_id"]]] = j
        label = f"run {sample}" if sample else ""
        runs[sample] = Group(build_inputs(rows, label=label, **common), pos)
    first: dict[Any, dict] = {}
    for r in records:
        first.setdefault(r["prompt_id"], r)
    refs = [{**{k: v for k, v in r.items() if k != "gen_logprobs"}, "text": r.get("reference") or "",
             "token_ids": None} for r in first.values()]
    references = Group(build_inputs(refs, label="references", **common), np.arange(n_prompts))
    return n_prompts, runs, references


def _gather(stats: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """stats[rows] with rows == -1 (a prompt the run lacks) as NaN, which aggregates leave out."""
    out = {}
    for name, values in stats.items():
        padded = np.append(np.asarray(values, dtype=np.float64), np.nan)
        out[name] = padded[np.where(rows < 0, len(padded) - 1, rows)]
    return out


def _run_scorer(scorer: Scorer, options: Mapping, groups: list[Group], resamples: np.ndarray | None,
                confidence: float) -> dict[str, float]:
    points: list[Mapping[str, Any]] = []
    replicates: list[Mapping[str, np.ndarray]] = []
    for group in groups:
        raw = scorer.fn(group.inputs, **options)
        if not scorer.per_item:
            points.append(raw)
            continue
        points.append(scorer.aggregate(raw, **options))
        if resamples is not None:
            replicates.append(scorer.aggregate(_gather(raw, group.pos[resamples]), **options))
    out: dict[str, float] = {}
    for metric in points[0]:
        values = np.array([float(p[metric]) for p in points])
        name = scorer.prefix + metric
        out[name] = float(values.mean())
        if len(values) > 1:
            out[f"{name}_std"] = float(values.std())
        if replicates:
            boot = np.mean([np.asarray(r[metric], dtype=np.float64) for r in replicates], axis=0)
            tail = (1 - confidence) / 2
            if np.all(np.isnan(boot)):
                low = high = float("nan")
            else:
                low, high = np.nanquantile(boot, [tail, 1 - tail])
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return out


def score_plan(plan, records: list[dict], *, model=None, tokenizer=None, device=None, seed: int = 0,
               progress: bool = True, models: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, float]:
    records = normalize_records(records)
    check_models(plan, models)
    check_needs(plan, records, model, tokenizer)
    common = dict(model=model, tokenizer=tokenizer, device=device, seed=seed, progress=progress)
    n_prompts, runs, references = make_groups(records, common)
    boot = plan.bootstrap
    resamples = None
    if boot["samples"] > 0:
        rng = np.random.default_rng(seed if boot["seed"] is None else boot["seed"])
        resamples = rng.integers(0, n_prompts, size=(boot["samples"], n_prompts))
    metrics: dict[str, float] = {}
    other: dict[tuple[str, str], list[Group]] = {}  # (model name, target) -> groups, shared by its scorers
    for scorer, options in plan.entries:
        groups = [references] if scorer.target == "references" else list(runs.values())
        name = options.get("model")
        if name:
            key = (name, scorer.target)
            if key not in other:
                other[key] = [with_model(g, name, *models[name]) for g in groups]
            groups = other[key]
        metrics.update(_run_scorer(scorer, options, groups, resamples, boot["confidence"]))
    return metrics
