"""Quadratic sampling (text-generation-webui's `smoothing_factor`, `smoothing_curve`): the function and its binder.

    >>> smoothing(torch.tensor([[2.0, 1.0, 0.0]]), 1.0, 1.0)   # max - f * (x - max) ** 2
    tensor([[ 2.,  1., -2.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, float_column
from decodebench.decoding.transforms.filters import NEG_INF, column, scalar_op
from decodebench.decoding.transforms.registry import PackContext, Step


def smoothing(logits: Tensor, smoothing_factor, smoothing_curve) -> Tensor:
    """Quadratic sampling (text-generation-webui): finite logits become
    `max - k f d**2 + s f d**3` with `d = x - max`, `k = (3 - curve) / 2`, `s = (curve - 1) / 2` (`f` 0: off).

    The reference works in the logits' dtype with Python-float coefficients; we round where it does, with
    per-row coefficients (`k * f` and `s * f` in double, then float32 as a Python scalar would be)."""
    f = column(smoothing_factor, logits, torch.float64, "smoothing_factor")
    c = column(smoothing_curve, logits, torch.float64, "smoothing_curve")
    kf, sf = (3 - c) / 2 * f, (c - 1) / 2 * f
    top = logits.amax(dim=-1, keepdim=True)
    d = logits - top
    out = -scalar_op(d**2, kf, torch.mul) + scalar_op(d**3, sf, torch.mul) + top
    return torch.where((logits != NEG_INF) & (f != 0), out, logits)


@builtin("smoothing_factor", smoothing)
def _smoothing(ctx: PackContext, on: list[bool]) -> Step:
    f, c = float_column(ctx, on, "smoothing_factor", 0.0), float_column(ctx, on, "smoothing_curve", 1.0)
    return lambda x, tables: smoothing(x, f, c)
