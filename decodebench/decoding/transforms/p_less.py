"""p-less and p-less-norm sampling (Tan, Wu & Howard, arXiv 2509.23234, ICLR 2026): truncation with no
hyperparameter.

p-less keeps the tokens whose probability is at least the row's collision probability `sum(p ** 2)` (the
chance that two draws agree); p-less-norm keeps those at least `(V * sum(p ** 2) - 1) / (V - 1)`, a lower
threshold that keeps more. Both follow the authors' `p_less_decode` / `p_less_norm_decode`
(github ryttry/p-less-sampling, `p_less_samplers.py`): softmax over the row, `probs < threshold` removed,
`V` the row's full width (`probs.size(-1)`, so tokens an earlier filter removed still count in `V`).
Statistics are in float32 for bf16/fp16 logits; only the kept set reaches the logits, which keep their values.

Where code and claims disagree: the paper calls the threshold "bounded and valid" (mathematically
`sum(p ** 2) <= max(p)`), but in float32 the authors' code rounds the sum of squares of an exactly uniform row
above every probability and removes every token (then divides by zero). llama.cpp's `test_p_less` (PR 26035)
expects a uniform row to be kept whole. We cap both thresholds at the row's largest probability: a cap that
never binds when the rounding does not, so every other row gets exactly the authors' kept set.

No sort: one softmax, one sum, one compare.

    >>> x = torch.log(torch.tensor([[0.1, 0.15, 0.2, 0.25, 0.3]]))   # sum(p ** 2) = 0.225
    >>> p_less(x).isinf().tolist()
    [[True, True, True, False, False]]
    >>> p_less_norm(x).isinf().tolist()                             # (5 * 0.225 - 1) / 4 = 0.03125
    [[False, False, False, False, False]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, on_column
from decodebench.decoding.transforms.filters import NEG_INF, column, opmath
from decodebench.decoding.transforms.registry import PackContext, Step


def _probs(logits: Tensor) -> Tensor:
    return logits.to(opmath(logits.dtype)).softmax(dim=-1)


def _drop_below(logits: Tensor, probs: Tensor, threshold: Tensor, on) -> Tensor:
    """`-inf` where `probs < min(threshold, max p)`, on the rows where `on` (a bool or `[B]` bools)."""
    cap = torch.minimum(threshold, probs.amax(dim=-1, keepdim=True))  # rounding guard; see the module docstring
    remove = (probs < cap) & column(on, logits, torch.bool, "on")
    return torch.where(remove, NEG_INF, logits)


def p_less(logits: Tensor, on=True) -> Tensor:
    """`[B, V]` -> `[B, V]`: keep tokens with `p >= sum(p ** 2)`; rows with `on` False are unchanged."""
    probs = _probs(logits)
    return _drop_below(logits, probs, probs.square().sum(dim=-1, keepdim=True), on)


def p_less_norm(logits: Tensor, on=True) -> Tensor:
    """`[B, V]` -> `[B, V]`: keep tokens with `p >= (V * sum(p ** 2) - 1) / (V - 1)`, V the row width."""
    probs = _probs(logits)
    v = logits.shape[-1]
    if v < 2:
        return logits.clone()
    threshold = (v * probs.square().sum(dim=-1, keepdim=True) - 1.0) / (v - 1.0)  # the authors' arithmetic order
    return _drop_below(logits, probs, threshold, on)


@builtin("p_less", p_less)
def _p_less(ctx: PackContext, on: list[bool]) -> Step:
    rows = on_column(ctx, on)
    return lambda x, tables: p_less(x, rows)


@builtin("p_less_norm", p_less_norm)
def _p_less_norm(ctx: PackContext, on: list[bool]) -> Step:
    rows = on_column(ctx, on)
    return lambda x, tables: p_less_norm(x, rows)
