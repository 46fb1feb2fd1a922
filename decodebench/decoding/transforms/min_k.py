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
Statistics in float32 for bf16/fp16 logits; kept logits keep their values. No full sort on CPU when the cliff
lies within the top 64 logits (see `min_k`).

    >>> x = torch.tensor([[9.0, 8.5, 8.0, 2.0, 1.5, 1.0, 0.5, 0.0]])   # the cliff is after rank 3
    >>> min_k(x, 0.0).isinf().tolist()
    [[False, False, False, True, True, True, True, True]]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, float_column, on_column
from decodebench.decoding.transforms.candidates import host_eager
from decodebench.decoding.transforms.filters import NEG_INF, column, opmath
from decodebench.decoding.transforms.registry import PackContext, Step

EPS = 1e-8


def _finish(vals: Tensor, n: Tensor, span: Tensor, weighted: Tensor, tau, logits: Tensor) -> Tensor:
    """`[B, 1]` kept count from the weighted decays over `vals`' first positions (ranks 1..)."""
    pos = torch.arange(1, weighted.shape[-1] + 1, device=vals.device, dtype=vals.dtype)
    weighted = torch.where(pos < n, weighted, NEG_INF)  # drops past the last finite logit are no cliff
    cliff = weighted.argmax(dim=-1, keepdim=True) + 1 if weighted.shape[-1] else torch.ones_like(n)
    t = column(tau, logits, vals.dtype, "min_k_tau").clamp(min=0)
    fallback = torch.floor(t / span).clamp(max=logits.shape[-1]).long()
    return torch.minimum(torch.maximum(cliff, fallback), n).clamp(min=1)


def _decays(vals: Tensor, span: Tensor) -> Tensor:
    pos = torch.arange(1, vals.shape[-1], device=vals.device, dtype=vals.dtype)
    return (vals[:, :-1] - vals[:, 1:]) / span / pos  # the reference's arithmetic order


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """`[B, 1]` finite count and smallest finite logit, in one pass each (no sort)."""
    fin = torch.isfinite(x)
    return fin.sum(dim=-1, keepdim=True).clamp(min=1), torch.where(fin, x, math.inf).amin(dim=-1, keepdim=True)


def min_k_counts(logits: Tensor, tau) -> tuple[Tensor, Tensor]:
    """`[B, 1]` long: how many sorted tokens each row keeps (before ties), and the sorted logits `[B, V]`."""
    x = logits.to(opmath(logits.dtype))
    vals = torch.sort(x, dim=-1, descending=True).values
    n, low = _stats(x)
    span = vals[:, :1] - low + EPS
    return _finish(vals, n, span, _decays(vals, span), tau, logits), vals


def _candidate_kth(x: Tensor, tau, logits: Tensor, k_cand: int) -> tuple[Tensor, Tensor]:
    """The k-th kept logit from `topk(k_cand)` alone, and which rows that settles exactly. For ranks
    i >= k_cand every drop is at most `z_K - low`, so `w_i <= (z_K - low) / span / K`: a best decay within the
    top K above that bound (with slack for rounding) is the global argmax, and a count <= K has its k-th there."""
    vals = torch.topk(x, k_cand, dim=-1).values
    n, low = _stats(x)
    span = vals[:, :1] - low + EPS
    weighted = _decays(vals, span)
    k = _finish(vals, n, span, weighted, tau, logits)
    pos = torch.arange(1, k_cand, device=x.device, dtype=x.dtype)
    best = torch.where(pos < n, weighted, NEG_INF).amax(dim=-1, keepdim=True)
    bound = (vals[:, -1:] - low) / span / k_cand
    exact = (n <= k_cand) | ((best > bound * (1 + 1e-4) + 1e-30) & (k <= k_cand))
    return vals.gather(1, (k - 1).clamp(max=k_cand - 1)), exact[:, 0]


def min_k(logits: Tensor, tau, on=True, *, candidates: int = 64) -> Tensor:
    """`[B, V]` -> `[B, V]`: keep each row's tokens down to its semantic cliff (see the module docstring).
    `tau` (`min_k_tau`, >= 0) sets the flat-row fallback; rows with `on` False are unchanged.

    On CPU (eager), the cut comes from `topk(candidates)` with an exact per-row check; rows the check cannot
    settle (a cliff or fallback deeper than the candidates) take the full sort. Elsewhere, and under
    `torch.compile`, every row takes the full sort, so the step has no host read. Both give the same kept set."""
    x = logits.to(opmath(logits.dtype))
    v = x.shape[-1]
    if host_eager(x) and 1 < candidates < v:
        kth, exact = _candidate_kth(x, tau, logits, candidates)
        if not bool(exact.all()):  # free on CPU: no device to wait for
            rows = (~exact).nonzero()[:, 0]
            k, vals = min_k_counts(logits[rows], _rows(tau, rows))
            kth = kth.index_copy(0, rows, vals.gather(1, k - 1))
    else:
        k, vals = min_k_counts(logits, tau)
        kth = vals.gather(1, k - 1)
    remove = (x < kth) & column(on, logits, torch.bool, "on")
    return torch.where(remove, NEG_INF, logits)


def _rows(tau, rows: Tensor):
    return tau.reshape(-1)[rows] if isinstance(tau, Tensor) and tau.dim() else tau


@builtin("min_k", min_k)
def _min_k(ctx: PackContext, on: list[bool]) -> Step:
    tau, rows = float_column(ctx, on, "min_k_tau", 0.0).float(), on_column(ctx, on)
    return lambda x, tables: min_k(x, tau, rows)
