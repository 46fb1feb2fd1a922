"""Answer accuracy against the references: the last integer of a generation equals the last integer of its
prompt's reference (lm-eval's `flexible-extract` filter of decodebench_arith: regex `(-?\\d+)`, last match,
then exact match). Per item, so it gets bootstrap intervals and the study's paired tests."""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from .inputs import Inputs
from .spec import Scorer, register

_INT = re.compile(r"-?\d+")


def last_integer(text: Optional[str]) -> Optional[str]:
    """The last integer in `text` ("7 + 4 = 11." -> "11"), without leading zeros; None when there is none."""
    found = _INT.findall(text or "")
    return str(int(found[-1])) if found else None


def answer_match_fn(inputs: Inputs) -> dict[str, np.ndarray]:
    """1.0 where the last integers agree, 0.0 where they do not (a generation without one is wrong); NaN
    where the reference has no integer (nothing to compare)."""
    out = []
    for text, ref in zip(inputs.texts, inputs.references):
        want = last_integer(ref)
        out.append(float("nan") if want is None else float(last_integer(text) == want))
    return {"answer_match": np.array(out, dtype=np.float64)}


register(Scorer(
    name="answer_match", fn=answer_match_fn, per_item=True, needs=frozenset({"texts", "references"}),
    metrics={"answer_match": True}, default=False,
    doc="share of generations whose last integer equals the reference's (arithmetic answers)",
))
