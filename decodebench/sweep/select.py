"""Fair selection, with no model: the dev/test split by prompt id, each method's setting chosen on dev and
reported on test, bootstrap intervals and the paired test against the best method.

The split ranks prompt ids by sha256("<split_seed>:<id>") and puts the first round(fraction x n) in dev
(at least one prompt on each side): it depends on the ids only, never on their order or on the methods.

The paired test is a sign-flip permutation test on the per-prompt differences of the test scores (two-sided,
exact over all 2^n flips for n <= 16 prompts, else `resamples` random flips, with the +1 correction of
Phipson & Smyth 2010). With shared noise (common random numbers) the pairs also share their sampling noise,
so a difference comes from the methods, not from the draws.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

EXACT_LIMIT = 16


def split_ids(ids: Sequence[Any], dev_fraction: float, seed: int = 0) -> tuple[list, list]:
    """(dev ids, test ids), each in the order given."""
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        raise ValueError(f"a dev/test split needs at least 2 prompts, got {len(ids)}; raise dataset.limit")
    rank = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n_dev = min(max(1, round(dev_fraction * len(ids))), len(ids) - 1)
    dev = set(rank[:n_dev])
    return [i for i in ids if i in dev], [i for i in ids if i not in dev]


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over prompts; (nan, nan) without resamples or values."""
    x = np.asarray([v for v in values if not np.isnan(v)], dtype=np.float64)
    if resamples <= 0 or len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def sign_flip_p(diffs: Sequence[float], resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of "mean difference 0" for paired differences (the sign-flip permutation test)."""
    d = np.asarray([v for v in diffs if not np.isnan(v)], dtype=np.float64)
    if len(d) == 0:
        return float("nan")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if len(d) <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        stats = np.abs((signs * d).mean(axis=1))
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, len(d)))
    stats = np.abs((signs * d).mean(axis=1))
    return float((np.sum(stats >= observed - tol) + 1) / (resamples + 1))


@dataclass
class PointScore:
    """One point's objective: per prompt (None for a corpus-level metric), and on dev and test."""

    name: str
    method: str
    label: str
    dev: float
    test: float
    per_prompt: Optional[dict] = None
    values: dict = field(default_factory=dict)  # the grid values (temperature, ...) for the plots


@dataclass
class Choice:
    method: str
    point: PointScore
    budget: int  # points it was tuned over
    sensitivity: float  # max - min of the dev objective over its grid
    test_ci: tuple[float, float] = (float("nan"), float("nan"))
    diff: float = float("nan")  # test score minus the best method's, on the prompts both have
    p_value: float = float("nan")
    best: bool = False


def _better(a: float, b: float, maximize: bool) -> bool:
    if np.isnan(b):
        return not np.isnan(a)
    return (a > b) if maximize else (a < b)


def choose(points: list[PointScore], maximize: bool) -> PointScore:
    """The point with the best dev score (the first in grid order on ties)."""
    best = points[0]
    for p in points[1:]:
        if _better(p.dev, best.dev, maximize):
            best = p
    return best


def select(points: list[PointScore], test_ids: list, maximize: bool, resamples: int = 1000,
           seed: int = 0) -> list[Choice]:
    """Each method's setting chosen on dev; its test score, interval and paired test against the best."""
    by_method: dict[str, list[PointScore]] = {}
    for p in points:
        by_method.setdefault(p.method, []).append(p)
    out = []
    for method, pts in by_method.items():
        devs = [p.dev for p in pts if not np.isnan(p.dev)]
        chosen = choose(pts, maximize)
        ci = bootstrap_ci([chosen.per_prompt[i] for i in test_ids if i in chosen.per_prompt], resamples, seed) \
            if chosen.per_prompt is not None else (float("nan"), float("nan"))
        out.append(Choice(method, chosen, len(pts), (max(devs) - min(devs)) if devs else float("nan"), ci))
    winner = None
    for c in out:
        if winner is None or _better(c.point.test, winner.point.test, maximize):
            winner = c
    if winner is None:
        return out
    winner.best = True
    for c in out:
        a, b = c.point.per_prompt, winner.point.per_prompt
        if c is winner or a is None or b is None:
            continue
        both = [i for i in test_ids if i in a and i in b and not np.isnan(a[i]) and not np.isnan(b[i])]
        diffs = [a[i] - b[i] for i in both]
        if diffs:
            c.diff, c.p_value = float(np.mean(diffs)), sign_flip_p(diffs, max(resamples, 1000), seed)
    return out
