"""Self-BLEU-4 (Zhu et al. 2018; Holtzman et al. 2020's protocol): the mean BLEU-4 of sampled generations,
each against all the other generations of the run as references.

Same numbers as NLTK's `sentence_bleu(others, hyp, weights=(0.25,) * 4,
smoothing_function=SmoothingFunction().method1)`, without its cost: NLTK recounts every reference's
n-grams for every hypothesis (quadratic in the run size). Here each text's n-gram counts are made once,
and for every n-gram the two largest counts over the run are kept with the text holding the largest, so
"the largest count among all texts but this one" is a lookup.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Mapping

import numpy as np
from tqdm.auto import tqdm

from .inputs import Inputs
from .ngrams import ngrams
from .spec import Scorer, at_least, register

EPSILON = 0.1  # NLTK SmoothingFunction's default epsilon, method1


class _Lengths:
    """Closest reference length as NLTK picks it (ties -> the shorter), over all lengths but one's own."""

    def __init__(self, lengths: list[int]) -> None:
        self.count = Counter(lengths)
        self.sorted = sorted(self.count)

    def closest_excluding(self, own: int) -> int:
        def usable(length: int) -> bool:
            return self.count[length] > (1 if length == own else 0)

        pos = bisect.bisect_left(self.sorted, own)
        below = next((self.sorted[j] for j in range(pos - 1, -1, -1) if usable(self.sorted[j])), None)
        above = next((self.sorted[j] for j in range(pos, len(self.sorted)) if usable(self.sorted[j])), None)
        candidates = [x for x in (below, above) if x is not None]
        return min(candidates, key=lambda r: (abs(r - own), r))


def self_bleu(sequences: list[list], hypotheses: list[int], max_n: int = 4, progress: bool = False) -> float:
    """Mean over `hypotheses` (indices into `sequences`) of BLEU against all other sequences."""
    if len(sequences) < 2:
        return float("nan")
    counts = [[Counter(ngrams(seq, n)) for n in range(1, max_n + 1)] for seq in sequences]
    # per order: n-gram -> (largest count, index of its text, second largest count)
    top: list[dict] = [{} for _ in range(max_n)]
    for idx, per_order in enumerate(counts):
        for order, table in zip(top, per_order):
            for gram, c in table.items():
                best = order.get(gram)
                if best is None:
                    order[gram] = (c, idx, 0)
                elif c > best[0]:
                    order[gram] = (c, idx, best[0])
                elif c > best[2]:
                    order[gram] = (best[0], best[1], c)
    lengths = _Lengths([len(s) for s in sequences])
    scores = []
    for i in tqdm(hypotheses, desc="self-BLEU", disable=not progress, leave=False):
        hyp_len = len(sequences[i])
        log_terms, first_matches = [], 0
        for n in range(max_n):
            table, order = counts[i][n], top[n]
            matches = 0
            for gram, c in table.items():
                best, owner, second = order[gram]
                matches += min(c, second if owner == i else best)
            denominator = max(1, hyp_len - n)
            if n == 0:
                first_matches = matches
            p = (matches if matches else EPSILON) / denominator
            log_terms.append(math.log(p) / max_n)
        if first_matches == 0:  # NLTK returns 0 when no unigram matches
            scores.append(0.0)
            continue
        ref_len = lengths.closest_excluding(hyp_len)
        bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
        scores.append(bp * math.exp(math.fsum(log_terms)))
    return float(np.mean(scores))


def self_bleu_fn(inputs: Inputs, max_hypotheses: int) -> dict[str, float]:
    """Hypotheses: a seeded sample of at most `max_hypotheses` generations (all when the run is smaller);
    references: every other generation of the run, as in Holtzman et al.'s `metrics/self_bleu.py`."""
    words = inputs.words()
    n = len(words)
    if n <= max_hypotheses:
        hypotheses = list(range(n))
    else:
        hypotheses = sorted(np.random.default_rng(inputs.seed).choice(n, max_hypotheses, replace=False).tolist())
    return {"self_bleu_4": self_bleu(words, hypotheses, progress=inputs.progress)}


def _check(options: Mapping) -> None:
    at_least(options, "max_hypotheses", 1, "self_bleu")


register(Scorer(
    name="self_bleu", fn=self_bleu_fn, per_item=False, needs=frozenset({"texts"}),
    metrics={"self_bleu_4": False}, options={"max_hypotheses": 1000}, check=_check,
    doc="self-BLEU-4: mean BLEU-4 of each generation against the others (NLTK method1 smoothing)",
))
