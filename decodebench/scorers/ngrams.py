"""n-gram diversity and repetition: rep-n and diversity (Su & Collier), distinct-n (Li et al. 2016),
seq-rep-4 (Welleck et al. 2019), generation length. Unit: whitespace tokens, `text.strip().split()`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .inputs import Inputs
from .spec import Scorer, choice, ratio, reference_variant, register

REP_ORDERS = (2, 3, 4)


def ngrams(tokens: list, n: int) -> list[tuple]:
    return list(zip(*(tokens[i:] for i in range(n))))


def _round_percent(x: np.ndarray) -> np.ndarray:
    """round(100 * x, 2) / 100 with Python's correctly rounded `round`, as the published code does
    (numpy's `round` multiplies first and can differ on the last digit)."""
    x = np.asarray(x, dtype=np.float64)
    rounded = [v if np.isnan(v) else round(v * 100, 2) for v in x.ravel().tolist()]
    return np.asarray(rounded, dtype=np.float64).reshape(x.shape) / 100


def rep_stats(inputs: Inputs, protocol: str) -> dict[str, np.ndarray]:
    """Per text: unique and total n-grams for n = 2, 3, 4.

    protocol "published": the reference code of Su & Collier (SimCTG `measure_repetition_and_diversity`)
    counts n-grams with `while end_idx < len(tokens)`, i.e. it leaves out each text's last n-gram: the
    n-grams of `tokens[:-1]`. "plain": every n-gram.
    """
    stats = {f"{kind}_{n}": np.zeros(len(inputs)) for n in REP_ORDERS for kind in ("unique", "total")}
    for i, words in enumerate(inputs.words()):
        if protocol == "published":
            words = words[:-1]
        for n in REP_ORDERS:
            grams = ngrams(words, n)
            stats[f"unique_{n}"][i] = len(set(grams))
            stats[f"total_{n}"][i] = len(grams)
    return stats


def rep_aggregate(stats: Mapping[str, np.ndarray], protocol: str) -> dict[str, np.ndarray]:
    """rep-n = 1 - sum(unique n-grams) / sum(n-grams), pooled over the texts of one run;
    diversity = (1 - rep-2)(1 - rep-3)(1 - rep-4). Published protocol: each rep-n first rounded to two
    decimals in percent, as the authors did before the product."""
    out, diversity = {}, 1.0
    for n in REP_ORDERS:
        rep = 1.0 - ratio(stats[f"unique_{n}"], stats[f"total_{n}"])
        if protocol == "published":
            rep = _round_percent(rep)
        out[f"rep_{n}"] = rep
        diversity = diversity * (1.0 - rep)
    out["diversity"] = diversity
    return out


def _check_rep(options: Mapping) -> None:
    choice(options, "protocol", ("published", "plain"), "rep")


REP = register(Scorer(
    name="rep", fn=rep_stats, aggregate=rep_aggregate, per_item=True, needs=frozenset({"texts"}),
    metrics={"rep_2": False, "rep_3": False, "rep_4": False, "diversity": True},
    options={"protocol": "published"}, check=_check_rep,
    doc="rep-2/3/4 and diversity (Su & Collier 2023), pooled over one run's texts",
))
register(reference_variant(REP))


def gen_length_fn(inputs: Inputs) -> dict[str, np.ndarray]:
    return {"gen_length": np.array([len(w) for w in inputs.words()], dtype=np.float64)}


register(Scorer(
    name="gen_length", fn=gen_length_fn, per_item=True, needs=frozenset({"texts"}),
    metrics={"gen_length": None},
    doc="mean whitespace tokens per generation (the published figure rounds this mean to 2 decimals)",
))


def distinct_fn(inputs: Inputs) -> dict[str, float]:
    """distinct-n (Li et al. 2016): distinct n-grams over all generations / all n-grams (every n-gram)."""
    out = {}
    for n in range(1, 5):
        seen, total = set(), 0
        for words in inputs.words():
            grams = ngrams(words, n)
            seen.update(grams)
            total += len(grams)
        out[f"distinct_{n}"] = len(seen) / total if total else float("nan")
    return out


register(Scorer(
    name="distinct", fn=distinct_fn, per_item=False, needs=frozenset({"texts"}),
    metrics={f"distinct_{n}": True for n in range(1, 5)},
    doc="distinct-1..4 (Li et al. 2016), pooled over one run's generations",
))


def seq_rep_fn(inputs: Inputs, unit: str) -> dict[str, np.ndarray]:
    """seq-rep-4 (Welleck et al. 2019): per generation 1 - unique 4-grams / 4-grams, then the mean over
    generations; a generation with no 4-gram (fewer than 4 tokens) is left out of the mean."""
    values = np.full(len(inputs), np.nan)
    for i, tokens in enumerate(inputs.units(unit)):
        grams = ngrams(list(tokens), 4)
        if grams:
            values[i] = 1.0 - len(set(grams)) / len(grams)
    return {"seq_rep_4": values}


def _check_unit(name: str):
    return lambda options: choice(options, "unit", ("word", "token"), name)


register(Scorer(
    name="seq_rep", fn=seq_rep_fn, per_item=True, needs=frozenset({"texts"}),
    metrics={"seq_rep_4": False}, options={"unit": "word"}, check=_check_unit("seq_rep"),
    doc="seq-rep-4 (Welleck et al. 2019), mean over generations",
))

