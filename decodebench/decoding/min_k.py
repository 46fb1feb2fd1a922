"""Min-k sampling (Ding et al., arXiv 2604.11012, "Min-k Sampling: Decoupling Truncation from Temperature
Scaling via Relative Logit Dynamics"): cut at the "semantic cliff" of the sorted logits.

With the row's logits sorted descending `z_1 >= z_2 >= ...`, the position-weighted relative decay at rank `i`
is `w_i = (z_i - z_{i+1}) / (z_1 - z_n + eps) / i`; the cliff is the first `argmax_i w_i`, and the row keeps
`k = max(i_cliff, floor(max(tau, 0) / (z_1 - z_n + eps)))` tokens (the second term keeps a near-flat row from
collapsing to one token), ties with the k-th logit included. Dividing the logits by a temperature scales every
drop and the range alike, so the cliff does not move; the chain runs min-k before temperature in every named
order, so the fallback reads raw logits too and the whole kept set is temperature-invariant.

Reference: the authors' repository (github YecanLee/Mink) could not be fetched here; this follows the paper's
Algorithm 1 as ported in vLLM's `MinKLogitsProcessor` and its test's `_reference_k` (names `min_k`,
`min_k_tau`, `eps = 1e-8`, float arithmetic `drops / range / positions` in that order). One extension: a row's
candidates are its finite logits (`z_n` is the smallest finite one and ranks stop there), so tokens an earlier
transform removed (`-inf`) neither enter the range nor form a cliff; on all-finite rows this is the reference.
Statistics in float32 for bf16/fp16 logits; kept logits keep their values.

    >>> x = torch.tensor([[9.0, 8.5, 8.0, 2.0, 1.5, 1.0, 0.5, 0.0]])   # the cliff is after rank 3
    >>> min_k(x, 0.0).isinf().tolist()
    [[False, False, False, True, True, True, True, True]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from .processors import NEG_INF, column, opmath

EPS = 1e-8


def min_k_counts(logits: Tensor, tau) -> Tensor:
    """`[B, 1]` long: how many sorted tokens each row keeps (before ties), and the sorted logits `[B, V]`."""
    x = logits.to(opmath(logits.dtype))
    vals = torch.sort(x, dim=-1, descending=True).values
    v = vals.shape[-1]
    n = torch.isfinite(vals).sum(dim=-1, keepdim=True).clamp(min=1)  # finite candidates, a prefix of vals
    low = vals.gather(1, n - 1)
    span = vals[:, :1] - low + EPS
    pos = torch.arange(1, v, device=x.device, dtype=x.dtype)
    weighted = (vals[:, :-1] - vals[:, 1:]) / span / pos
    weighted = torch.where(pos < n, weighted, NEG_INF)  # drops past the last finite logit are no cliff
    cliff = (weighted.argmax(dim=-1, keepdim=True) + 1) if v > 1 else torch.ones_like(n)
    t = column(tau, logits, x.dtype, "min_k_tau").clamp(min=0)
    fallback = torch.floor(t / span).clamp(max=v).long()
    return torch.minimum(torch.maximum(cliff, fallback), n).clamp(min=1), vals


def min_k(logits: Tensor, tau, on=True) -> Tensor:
    """`[B, V]` -> `[B, V]`: keep each row's tokens down to its semantic cliff (see the module docstring).
    `tau` (`min_k_tau`, >= 0) sets the flat-row fallback; rows with `on` False are unchanged."""
    k, vals = min_k_counts(logits, tau)
    kth = vals.gather(1, k - 1)
    remove = (logits.to(vals.dtype) < kth) & column(on, logits, torch.bool, "on")
    return torch.where(remove, NEG_INF, logits)
