"""Classifier-free guidance's combination step (transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor`);
the running batch pairs each guided row with its unconditional mirror (engine/running.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.filters import column, scalar_op


def cfg_combine(cond_logits: Tensor, uncond_logits: Tensor, guidance_scale) -> Tensor:
    """Classifier-free guidance's step (HF `UnbatchedClassifierFreeGuidanceLogitsProcessor`):
    `s * (log_softmax(cond) - log_softmax(uncond)) + log_softmax(uncond)`; rows with scale 1 get
    `log_softmax(cond)`. `cond_logits`/`uncond_logits` `[B, V]`: the same rows' next-token logits with the
    prompt and with the negative prompt (or only the last token when there is none, as HF does)."""
    scores = torch.nn.functional.log_softmax(cond_logits, dim=-1)
    uncond = torch.nn.functional.log_softmax(uncond_logits, dim=-1)
    s = column(guidance_scale, cond_logits, torch.float64, "guidance_scale")
    out = scalar_op(scores - uncond, s, torch.mul) + uncond
    return torch.where(s == 1, scores, out)
