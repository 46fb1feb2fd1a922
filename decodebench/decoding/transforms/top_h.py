"""Top-H ("Top-H Decoding", NeurIPS 2025, arXiv 2509.02510; transformers' `TopHLogitsWarper`): the function
and its binder. Equal to transformers' bits in fp32, bf16 and fp16 (tests/decoding/test_samplers_misc.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, float_column, on_rows_only, rows_of
from decodebench.decoding.transforms.registry import PackContext, Step
from decodebench.decoding.transforms.filters import NEG_INF, column, scalar_op


def top_h(logits: Tensor, top_h, top_n: int = 100) -> Tensor:
    """Top-H ("Top-H Decoding", NeurIPS 2025, arXiv 2509.02510), HF `TopHLogitsWarper`: among the `top_n`
    most likely tokens, keep the most likely ones while their cumulative entropy terms `-p log p` stay <= `top_h * H` (H over those
    `top_n`), always the first."""
    b, v = logits.shape
    n = min(top_n, v)
    top_logits, top_idx = torch.topk(logits, n, dim=-1, largest=True, sorted=True)
    norm = top_logits - top_logits.logsumexp(dim=-1, keepdim=True)  # Categorical(logits=...)
    probs = norm.softmax(dim=-1)
    ent = -(torch.clamp(norm, min=torch.finfo(norm.dtype).min) * probs).sum(-1)
    tau = scalar_op(ent[:, None], column(top_h, logits, name="top_h"), torch.mul)
    cum = torch.cumsum(-probs * torch.log(probs), dim=-1)
    keep_top = cum <= tau
    keep_top[:, 0] = True
    keep = torch.zeros(b, v, dtype=torch.bool, device=logits.device).scatter_(1, top_idx, keep_top)
    return torch.where(keep, logits, NEG_INF)


@builtin("top_h", top_h)
def _top_h(ctx: PackContext, on: list[bool]) -> Step:
    h = float_column(ctx, on, "top_h", 1.0)
    return on_rows_only(ctx, on, lambda x, i: top_h(x, rows_of(h, i)))
