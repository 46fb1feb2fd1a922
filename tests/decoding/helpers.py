"""Shared fixtures for the decoding tests: random logits with ties and -inf entries."""

from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # every logits dtype a run accepts


def make_logits(b: int, v: int, dtype=torch.float32, seed: int = 0, ties: bool = False, neg_inf: float = 0.0):
    """`[b, v]` random logits. `ties` rounds to a coarse grid (many exact ties); `neg_inf` is the share of
    entries set to -inf (each row keeps at least one finite entry)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, v, generator=g, dtype=torch.float64) * 3
    if ties:
        x = (x * 2).round() / 2
    if neg_inf:
        drop = torch.rand(b, v, generator=g) < neg_inf
        drop[:, 0] = False
        x = x.masked_fill(drop, float("-inf"))
    return x.to(dtype)


def logit_cases(b: int = 6, v: int = 300):
    """(label, logits) over dtypes, ties and -inf inputs."""
    out = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for ties in (False, True):
            for neg_inf in (0.0, 0.3):
                label = f"{str(dtype)[6:]}-{'ties' if ties else 'noties'}-{'inf' if neg_inf else 'finite'}"
                out.append((label, make_logits(b, v, dtype, seed=len(out), ties=ties, neg_inf=neg_inf)))
    return out
