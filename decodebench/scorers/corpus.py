"""Corpus-level measures of one run: gzip compression ratio (Shaib et al. 2024) and the Zipf coefficient
(Holtzman et al. 2020)."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from typing import Mapping

import numpy as np

from .inputs import Inputs
from .spec import Scorer, at_least, choice, register


def compression_ratio(texts: list[str]) -> float:
    """The `diversity` package's (Shaib et al. 2024) `compression_ratio(texts, 'gzip')`, byte for byte.

    That function joins the texts with spaces, writes them to a file, and writes `gzip.compress(joined)`
    through `gzip.GzipFile("compressed.gz")`: the text is gzipped twice and the outer header carries the
    file name. The ratio is the joined text's size over that file's size, rounded to 3 decimals. Its
    reference values come from exactly this, so it is reproduced here in memory.
    """
    joined = " ".join(texts).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="compressed.gz", mode="wb", fileobj=buffer) as outer:
        outer.write(gzip.compress(joined))
    return round(len(joined) / len(buffer.getvalue()), 3)


def compression_fn(inputs: Inputs) -> dict[str, float]:
    return {"compression_ratio": compression_ratio(inputs.texts)}


register(Scorer(
    name="compression_ratio", fn=compression_fn, per_item=False, needs=frozenset({"texts"}),
    metrics={"compression_ratio": False},
    doc="gzip compression ratio of the joined generations (Shaib et al. 2024); higher is more repetitive",
))


def zipf_coefficient(sequences: list[list], top: int) -> float:
    """Holtzman et al. (2020) `metrics/zipf.py`: count every type, take the `top` most frequent, fit
    log(frequency) against log(rank) by least squares and return minus the slope. NaN with < 2 types."""
    counts = Counter()
    for seq in sequences:
        counts.update(seq)
    freqs = np.array(sorted(counts.values(), reverse=True)[:top], dtype=np.float64)
    if len(freqs) < 2:
        return float("nan")
    ranks = np.arange(1, len(freqs) + 1, dtype=np.float64)
    slope = np.polyfit(np.log(ranks), np.log(freqs), 1)[0]
    return float(-slope)


def zipf_fn(inputs: Inputs, top: int, unit: str) -> dict[str, float]:
    return {"zipf": zipf_coefficient(inputs.units(unit), top)}


def _check_zipf(options: Mapping) -> None:
    at_least(options, "top", 2, "zipf")
    choice(options, "unit", ("word", "token"), "zipf")


register(Scorer(
    name="zipf", fn=zipf_fn, per_item=False, needs=frozenset({"texts"}), metrics={"zipf": None},
    options={"top": 5000, "unit": "word"}, check=_check_zipf,
    doc="Zipf coefficient over the top 5,000 types (Holtzman et al. 2020)",
))
