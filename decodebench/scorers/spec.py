"""A scorer is one frozen spec and one function; `SCORERS` is the registry configs choose them from.

Two kinds of scorer:

- per-item (`per_item=True`): the function returns per-record statistics, each a float array aligned with
  the records (NaN where a record has nothing to contribute, e.g. an empty generation for a per-text ratio),
  and `aggregate(stats, **options)` turns them into metrics. Aggregates reduce over the LAST axis ignoring NaN, so the same
  function gives the point estimate on `[n]` arrays and every bootstrap replicate at once on `[B, n]`
  arrays. These are the scorers that get bootstrap intervals over prompts.
- corpus-level (`per_item=False`): the function returns the metrics directly (self-BLEU, distinct-n,
  compression ratio, Zipf, MAUVE): they are not sums over prompts, so they get no interval.

`target="references"` scores the human references (one per prompt) with the same function; its metrics
carry the `reference_` prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from decodebench.registry import Registry

NEEDS = frozenset({"texts", "token_ids", "prompts", "references", "model"})


def nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis, NaN entries left out; NaN (no warning) where nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    n = np.sum(~np.isnan(x), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(x, axis=-1) / n


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """sum(num) / sum(den) over the last axis, NaN entries left out; NaN where the denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(num, axis=-1) / np.nansum(den, axis=-1)


def mean_aggregate(stats: Mapping[str, np.ndarray], **options: Any) -> dict[str, np.ndarray]:
    return {name: nanmean(values) for name, values in stats.items()}


@dataclass(frozen=True)
class Scorer:
    """name: how configs choose it. metrics: each produced metric -> higher_is_better (None: no direction).
    needs: inputs it reads, a subset of NEEDS. options: option -> default (the type of the default is the
    type accepted; a None default accepts a string or None). check: raises ValueError on a bad option value.
    """

    name: str
    fn: Callable[..., Mapping[str, Any]]
    metrics: Mapping[str, bool | None]
    needs: frozenset[str]
    per_item: bool
    aggregate: Callable[..., Mapping[str, Any]] = mean_aggregate
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], None] | None = None
    target: str = "generations"
    doc: str = ""
    # chosen by `names: all` and the evaluate module's default set; False for scorers that need the run's own
    # settings (a constraint to check, watermark keys) and are asked for by name
    default: bool = True

    def __post_init__(self) -> None:
        if not self.needs <= NEEDS:
            raise ValueError(f"scorer {self.name!r}: unknown needs {sorted(self.needs - NEEDS)}")
        if self.target not in ("generations", "references"):
            raise ValueError(f"scorer {self.name!r}: target must be 'generations' or 'references'")

    @property
    def prefix(self) -> str:
        return "reference_" if self.target == "references" else ""

    @property
    def metric_names(self) -> list[str]:
        return [self.prefix + m for m in self.metrics]

    def needs_for(self, options: Mapping[str, Any]) -> frozenset[str]:
        """What this scorer reads with these options: `unit: token` adds the records' token ids; a
        scoring `model` of its own (a non-empty `model` option) replaces the model that generated."""
        extra = {"token_ids"} if options.get("unit") == "token" else set()
        needs = self.needs | extra
        return needs - {"model"} if options.get("model") else needs


SCORERS: Registry[Scorer] = Registry("scorer")


def register(scorer: Scorer) -> Scorer:
    SCORERS.register(scorer.name, scorer)
    return scorer


def reference_variant(base: Scorer) -> Scorer:
    """The same scorer run on the references (one per prompt): metrics `reference_<metric>`."""
    needs = (base.needs - {"texts", "token_ids"}) | {"references"}
    return Scorer(
        name=f"reference_{base.name}", fn=base.fn, metrics=base.metrics, needs=frozenset(needs),
        per_item=base.per_item, aggregate=base.aggregate, options=base.options, check=base.check,
        target="references", doc=f"{base.doc} (on the human references)",
    )


def choice(options: Mapping[str, Any], key: str, allowed: tuple[str, ...], scorer: str) -> None:
    if options[key] not in allowed:
        raise ValueError(f"scorers.{scorer}.{key} must be one of {', '.join(allowed)}; got {options[key]!r}")


def at_least(options: Mapping[str, Any], key: str, low: float, scorer: str) -> None:
    if options[key] < low:
        raise ValueError(f"scorers.{scorer}.{key} must be >= {low}; got {options[key]!r}")
