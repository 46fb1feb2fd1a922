"""Scorers: the metrics of decoding research, each a small spec and one function in one registry.

Public API (the CLI and the run loop use these):

- `resolve_scorers(cfg) -> ScorerPlan`: validate the `scorers` config up front, before any model loads.
- `ScorerPlan.score(records, *, model=None, tokenizer=None, device=None, seed=0, progress=True, models=None)`
  -> flat dict metric -> float (fractions in [0, 1], not percent). `models`: the scoring models other
  than the one that generated, `{name: (model, tokenizer)}` for each name in `plan.scoring_models()`
  (the model-based scorers' non-empty `model` option); the caller loads them.
- `higher_is_better(metric) -> bool | None` for report arrows.
- `load_generations(path, *, text_field=..., ...) -> list[dict]` and `score_file(path, cfg, ...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

# importing the families registers their scorers
from . import constraints, corpus, embedding, lm, mauve_scorer, ngrams, repetition, self_bleu  # noqa: F401
from . import answer  # noqa: F401  (answer_match: the studies on arithmetic)
from .inputs import Inputs
from .plan import ScorerPlan, higher_is_better, resolve_scorers
from .records import load_generations
from .spec import SCORERS, Scorer


def score_file(path: str | Path, cfg: Mapping, *, model=None, tokenizer=None, device=None, seed: int = 0,
               progress: bool = True, models: Mapping | None = None, **field_names: str) -> dict[str, float]:
    """Load a generations file (field names as in `load_generations`), resolve `cfg` and score it.
    The config is checked before the file is read, so a typo fails fast."""
    plan = resolve_scorers(cfg)
    records = load_generations(path, **field_names)
    return plan.score(records, model=model, tokenizer=tokenizer, device=device, seed=seed, progress=progress,
                      models=models)


__all__ = ["SCORERS", "Inputs", "Scorer", "ScorerPlan", "higher_is_better", "load_generations",
           "resolve_scorers", "score_file"]
