"""DeepConf's trace confidences and votes (facebookresearch/deepconf `deepconf/utils.py`), pure numpy: the
search method (deepconf.py) and the selectors (decodebench/selectors.py) both count votes with these."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

VOTES = ("majority", "mean_confidence_weighted", "tail_confidence_weighted", "bottom_window_weighted",
         "min_window_weighted", "top10_tail_filtered", "top10_bottom_window_filtered")
TAIL_TOKENS = 2048


def group_confidences(confs: list[float], window: int) -> list[float]:
    """Sliding-window means, rounded to 3 decimals (one mean when shorter; [0] when empty)."""
    if len(confs) < window:
        return [sum(confs) / len(confs)] if confs else [0]
    c = np.concatenate([[0.0], np.cumsum(confs)])
    return [round(float(x), 3) for x in (c[window:] - c[:-window]) / window]


def bottom_window_confidence(confs: list[float], window: int, bottom_percent: float = 0.1) -> float:
    """Mean of the bottom `bottom_percent` of the window means (-1: the smallest window mean)."""
    if not confs:
        return 0.0
    if len(confs) < window:
        return float(np.mean(confs))
    c = np.concatenate([[0.0], np.cumsum(confs)])
    means = (c[window:] - c[:-window]) / window
    if bottom_percent == -1:
        return float(means.min())
    n = max(1, int(len(means) * bottom_percent))
    return float(means.min()) if n == 1 else float(np.mean(np.partition(means, n - 1)[:n]))


def trace_confidence(confs: list[float], kind: str, window: int) -> float:
    if not confs:
        return 0.0
    if kind == "tail":
        return float(np.mean(confs[-TAIL_TOKENS:]))
    if kind == "bottom_window":
        return bottom_window_confidence(confs, window)
    if kind == "min_window":
        return bottom_window_confidence(confs, window, -1)
    return float(np.mean(confs))


def weighted_vote(answers: list[str], weights: list[float]) -> Optional[str]:
    totals: dict[str, float] = {}
    for a, w in zip(answers, weights):
        totals[a] = totals.get(a, 0.0) + float(w)
    return max(totals, key=lambda a: totals[a]) if totals else None  # ties: the answer seen first


def vote(answers: list[Optional[str]], confs: list[list[float]], method: str, window: int) -> Optional[str]:
    """The answer `method` (one of VOTES) elects among traces with an answer (None if none has one)."""
    keep = [i for i, a in enumerate(answers) if a]
    if not keep:
        return None
    ans = [answers[i] for i in keep]
    if method == "majority":
        return Counter(ans).most_common(1)[0][0]
    if method.startswith("top10_"):
        kind = method[len("top10_"):-len("_filtered")]
        c = [trace_confidence(confs[i], kind, window) for i in keep]
        bar = np.percentile(c, 90)
        top = [j for j, x in enumerate(c) if x >= bar]
        ans, weights = [ans[j] for j in top], [c[j] for j in top]
    else:
        weights = [trace_confidence(confs[i], method[:-len("_weighted")].replace("_confidence", ""), window)
                   for i in keep]
    return weighted_vote(ans, weights) if any(w > 0 for w in weights) else None


def conf_bar(min_confs: list[float], confidence_percentile: float) -> float:
    return float(np.percentile(min_confs, 100 - confidence_percentile))
