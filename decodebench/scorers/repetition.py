"""Token-level repetition inside one generation: rep-w, rep-r (Fu et al. 2021) and the rate of
generations that end in a repeating loop (Holtzman et al. 2020). Each is a per-generation value
averaged over generations, as the authors' code does; `unit` picks whitespace words or the engine's
token ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np

from .inputs import Inputs
from .spec import Scorer, at_least, choice, register


def rep_w_value(tokens: list, window: int) -> float:
    """Share of tokens that already occur among the `window` tokens before them (Fu et al. 2021,
    "A Theoretical Analysis of the Repetition Problem in Text Generation", AAAI; rep-w with w = 16,
    `get_rep` in their `src/eval_metrics.py`). NaN for an empty text."""
    if not tokens:
        return float("nan")
    hits = sum(1 for i, tok in enumerate(tokens) if tok in tokens[max(i - window, 0):i])
    return hits / len(tokens)


def rep_r_value(tokens: list) -> float:
    """Share of tokens inside repeated snippets (Fu et al. 2021, "A Theoretical Analysis of the
    Repetition Problem in Text Generation", AAAI 2021, rep-r): a snippet is a bigram that occurs at
    least twice in the text, and both tokens of every occurrence count as repeated. Matches `get_repc`
    in the authors' `src/eval_metrics.py`, which gives 0 for texts of fewer than 2 tokens; an empty
    text is NaN here (left out of the mean) since its share is undefined."""
    if not tokens:
        return float("nan")
    if len(tokens) < 2:
        return 0.0
    bigrams = list(zip(tokens, tokens[1:]))
    counts = Counter(bigrams)
    repeated = [False] * len(tokens)
    for i, gram in enumerate(bigrams):
        if counts[gram] > 1:
            repeated[i] = repeated[i + 1] = True
    return sum(repeated) / len(tokens)


def rep_w_fn(inputs: Inputs, window: int, unit: str) -> dict[str, np.ndarray]:
    return {"rep_w": np.array([rep_w_value(list(t), window) for t in inputs.units(unit)], dtype=np.float64)}


def rep_r_fn(inputs: Inputs, unit: str) -> dict[str, np.ndarray]:
    return {"rep_r": np.array([rep_r_value(list(t)) for t in inputs.units(unit)], dtype=np.float64)}


def tail_loop(tokens: list, max_phrase_len: int) -> tuple[int, int]:
    """(phrase length L, repeats k) of the loop the text ends in: for each L in 1..max_phrase_len, k is
    how many times the last L tokens occur back to back at the end; the L with the most repeats wins
    (the shortest on a tie). Holtzman et al.'s `metrics/repetition.py`."""
    best_len, best_repeats = 0, 0
    rev = tokens[::-1]
    for n in range(1, max_phrase_len + 1):
        if n > len(rev):
            break
        head, k = rev[:n], 1
        while rev[n * k:n * (k + 1)] == head:
            k += 1
        if k > best_repeats:
            best_len, best_repeats = n, k
    return best_len, best_repeats


def loop_fn(inputs: Inputs, unit: str, max_phrase_len: int, min_phrase_len: int,
            min_repeats: int, short_phrase_repeats: int) -> dict[str, np.ndarray]:
    """A generation ends in a repeating loop when its tail is a phrase of L tokens repeated back to back
    k times, with (L, k) from `tail_loop`, k >= min_repeats, and either L >= min_phrase_len or
    k > short_phrase_repeats. Defaults are Holtzman et al. (2020)'s: phrases up to 90 tokens, k >= 2,
    L >= 3, or a shorter phrase repeated more than 50 times. An empty text does not loop."""
    values = np.zeros(len(inputs))
    for i, tokens in enumerate(inputs.units(unit)):
        length, repeats = tail_loop(list(tokens), max_phrase_len)
        if repeats >= min_repeats and (length >= min_phrase_len or repeats > short_phrase_repeats):
            values[i] = 1.0
    return {"repetition_loop_rate": values}


def _check_window(options: Mapping) -> None:
    at_least(options, "window", 1, "rep_w")
    choice(options, "unit", ("word", "token"), "rep_w")


def _check_loop(options: Mapping) -> None:
    choice(options, "unit", ("word", "token"), "repetition_loop")
    for key in ("max_phrase_len", "min_phrase_len", "short_phrase_repeats"):
        at_least(options, key, 1, "repetition_loop")
    at_least(options, "min_repeats", 2, "repetition_loop")


register(Scorer(
    name="rep_w", fn=rep_w_fn, per_item=True, needs=frozenset({"texts"}), metrics={"rep_w": False},
    options={"window": 16, "unit": "word"}, check=_check_window,
    doc="rep-w (Fu et al. 2021): share of tokens seen in the previous `window` tokens",
))
register(Scorer(
    name="rep_r", fn=rep_r_fn, per_item=True, needs=frozenset({"texts"}), metrics={"rep_r": False},
    options={"unit": "word"}, check=lambda o: choice(o, "unit", ("word", "token"), "rep_r"),
    doc="rep-r (Fu et al. 2021): share of tokens inside bigrams that occur twice or more",
))
register(Scorer(
    name="repetition_loop", fn=loop_fn, per_item=True, needs=frozenset({"texts"}),
    metrics={"repetition_loop_rate": False},
    options={"unit": "word", "max_phrase_len": 90, "min_phrase_len": 3, "min_repeats": 2,
             "short_phrase_repeats": 50},
    check=_check_loop,
    doc="share of generations that end in a repeating loop (Holtzman et al. 2020)",
))
