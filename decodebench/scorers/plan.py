"""From the `scorers` config to numbers: `resolve_scorers(cfg)` checks everything up front (before any
model loads) and returns a `ScorerPlan`; `ScorerPlan.score(records, ...)` returns a flat dict of metrics.

Config (the plain dict of the `scorers` config group)::

    names: [rep, gen_length, perplexity]   # or "all"; a metric name (diversity) selects its scorer
    bootstrap: {samples: 1000, seed: null, confidence: 0.95}   # samples 0: no intervals
    self_bleu: {max_hypotheses: 1000}      # options of a scorer, by its name (defaults in code)

Statistics: with several samples per prompt, every metric is computed on each `sample_index` (a "run")
separately and reported as the mean over runs, with `<metric>_std` (population std, as the published
code's np.std). Per-item scorers also get a percentile bootstrap interval over prompts,
`<metric>_ci_low` / `<metric>_ci_high`: prompts are resampled with replacement (the same resamples for
every metric), each run is re-aggregated on its rows for those prompts, and runs are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from decodebench.registry import did_you_mean

from .spec import SCORERS, Scorer
from .statistics import score_plan

RESERVED = ("names", "bootstrap")
BOOTSTRAP_DEFAULTS = {"samples": 1000, "seed": None, "confidence": 0.95}


def _metric_index() -> dict[str, Scorer]:
    return {m: s for _, s in SCORERS.items() for m in s.metric_names}


def higher_is_better(metric_name: str) -> bool | None:
    """Direction of a metric for report arrows: True, False, or None (no direction, or unknown).
    `<m>_ci_low` / `<m>_ci_high` follow `<m>`; `<m>_std` has none."""
    if metric_name.startswith("selected_"):  # the same metric over a selector's chosen outputs
        metric_name = metric_name[len("selected_"):]
    for suffix in ("_ci_low", "_ci_high"):
        if metric_name.endswith(suffix):
            metric_name = metric_name[: -len(suffix)]
    scorer = _metric_index().get(metric_name)
    if scorer is None:
        return None
    return scorer.metrics[metric_name[len(scorer.prefix):]]


def _check_value(where: str, value: Any, default: Any) -> Any:
    if default is None:
        ok = value is None or isinstance(value, str)
        kind = "a string or null"
    elif isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        ok, kind = isinstance(value, type(default)), type(default).__name__
    if not ok:
        raise ValueError(f"{where} must be {kind}; got {value!r}")
    return value


def _resolve_options(scorer: Scorer, given: Any) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ValueError(f"scorers.{scorer.name} must be a mapping of options; got {given!r}")
    options = dict(scorer.options)
    for key, value in given.items():
        if not scorer.options:
            raise ValueError(f"scorers.{scorer.name} takes no options; got {key!r}")
        if key not in scorer.options:
            raise ValueError(did_you_mean(f"option of scorer {scorer.name!r}", str(key), list(scorer.options)))
        options[key] = _check_value(f"scorers.{scorer.name}.{key}", value, scorer.options[key])
    if scorer.check is not None:
        scorer.check(options)
    return options


def _resolve_names(names: Any) -> list[str]:
    if names == "all":
        return [n for n, s in SCORERS.items() if s.default]
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"scorers.names must be a list of scorer names or 'all'; got {names!r}")
    by_metric = _metric_index()
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"scorers.names must hold names; got {name!r}")
        if name in SCORERS:
            resolved = name
        elif name in by_metric:
            resolved = by_metric[name].name
        else:
            raise ValueError(did_you_mean("scorer", name, SCORERS.names() + sorted(by_metric)))
        if resolved not in out:
            out.append(resolved)
    return out


def _resolve_bootstrap(given: Any) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ValueError(f"scorers.bootstrap must be a mapping; got {given!r}")
    out = dict(BOOTSTRAP_DEFAULTS)
    for key, value in given.items():
        if key not in BOOTSTRAP_DEFAULTS:
            raise ValueError(did_you_mean("scorers.bootstrap option", str(key), list(BOOTSTRAP_DEFAULTS)))
        out[key] = value
    if not isinstance(out["samples"], int) or isinstance(out["samples"], bool) or out["samples"] < 0:
        raise ValueError(f"scorers.bootstrap.samples must be an integer >= 0; got {out['samples']!r}")
    if out["seed"] is not None and (not isinstance(out["seed"], int) or isinstance(out["seed"], bool)):
        raise ValueError(f"scorers.bootstrap.seed must be an integer or null; got {out['seed']!r}")
    conf = out["confidence"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf < 1:
        raise ValueError(f"scorers.bootstrap.confidence must be in (0, 1); got {conf!r}")
    return out


def resolve_scorers(cfg: Mapping) -> "ScorerPlan":
    """Validate the `scorers` config and return the plan; raises ValueError with a one-line message."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the scorers config must be a mapping; got {cfg!r}")
    for key in cfg:
        if key not in RESERVED and key not in SCORERS:
            raise ValueError(did_you_mean("key in the scorers config", str(key), list(RESERVED) + SCORERS.names()))
    options = {name: _resolve_options(SCORERS.get(name), cfg[name]) for name in cfg if name not in RESERVED}
    bootstrap = _resolve_bootstrap(cfg.get("bootstrap"))
    if "names" not in cfg:
        raise ValueError("scorers.names is missing: list the scorers to run, or 'all'")
    names = _resolve_names(cfg["names"])
    # a scorer named without options is checked with its defaults too (constraint_valid needs one given)
    entries = tuple((SCORERS.get(n), options.get(n) or _resolve_options(SCORERS.get(n), None)) for n in names)
    return ScorerPlan(entries=entries, bootstrap=bootstrap)


@dataclass(frozen=True)
class ScorerPlan:
    entries: tuple[tuple[Scorer, Mapping[str, Any]], ...]
    bootstrap: Mapping[str, Any]

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.entries]

    @property
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(s.needs_for(o) for s, o in self.entries))

    @property
    def needs_model(self) -> bool:
        return "model" in self.needs

    @property
    def needs_references(self) -> bool:
        return "references" in self.needs

    @property
    def metric_names(self) -> list[str]:
        return [m for s, _ in self.entries for m in s.metric_names]

    def scoring_models(self) -> set[str]:
        """The scoring models other than the one that generated (the non-empty `model` options), for the
        caller to load and pass to `score(models={name: (model, tokenizer)})`."""
        return {o["model"] for _, o in self.entries if o.get("model")}

    def describe(self) -> dict[str, dict[str, Any]]:
        """The resolved options of every scorer, and the bootstrap settings, for the run's records."""
        return {**{s.name: dict(o) for s, o in self.entries}, "bootstrap": dict(self.bootstrap)}

    def score(self, records: list, *, model=None, tokenizer=None, device=None, seed: int = 0,
              progress: bool = True, models: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, float]:
        """`model`/`tokenizer`: the model that generated; `models`: the other scoring models, by the
        name in the scorers' `model` option (see `scoring_models()`)."""
        return score_plan(self, records, model=model, tokenizer=tokenizer, device=device, seed=seed,
                          progress=progress, models=models)

