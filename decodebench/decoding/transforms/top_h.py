"""Top-H (transformers), quadratic smoothing (text-generation-webui), multi-token sequence bias and bans
(transformers), and classifier-free guidance's combination step (transformers), as batched transforms.

Each gives its reference's bits on the same logits in fp32, bf16 and fp16 (tests/decoding/test_samplers_misc.py).

    >>> smoothing(torch.tensor([[2.0, 1.0, 0.0]]), 1.0, 1.0)   # max - f * (x - max) ** 2
    tensor([[ 2.,  1., -2.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.filters import NEG_INF, column, scalar_op


# ------------------------------------------------------------------------------------------------- top-H
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


# --------------------------------------------------------------------------------------------- smoothing
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


# ------------------------------------------------------------------------------- sequence bias and bans
def sequence_bias(
    logits: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    singles: Tensor,
    multi: list[tuple[Tensor, Tensor, Tensor]],
) -> Tensor:
    """HF `SequenceBiasLogitsProcessor` per row: `singles` `[B, V]` float32 biases for one-token sequences;
    `multi` lists `(prefixes [B, G, L], last [B, G], bias [B, G] float32)` for sequences of L + 1 tokens (a
    row's unused slots hold bias 0): a sequence's bias goes to its last token when the row's last L tokens
    equal its prefix. As in HF, biases are summed in the logits' dtype first, then added once.

    Unlike HF, a window reaching into left padding never matches, so a row's result does not depend on how
    much its batch-mates pad it (HF compares the pad ids too)."""
    bias = torch.zeros_like(logits)
    bias += singles.to(logits.device)
    t = input_ids.shape[1]
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
    for prefixes, last, vals in multi:
        n = prefixes.shape[-1]
        if n > t:  # the prefix is longer than the context: ignored, as in HF
            continue
        tail = input_ids[:, None, t - n :]
        match = (tail == prefixes).all(dim=-1) & real[:, t - n :].all(dim=-1, keepdim=True)
        bias.scatter_add_(1, last, torch.where(match, vals, 0.0).to(bias.dtype))
    return logits + bias


# -------------------------------------------------------------------------------- classifier-free guidance
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
