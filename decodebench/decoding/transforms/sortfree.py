"""The sort-free paths of the sort-based transforms, on the shared candidate machinery (candidates.py).

Each function returns what its transform needs to finish without a sort (a cut value, a kept mask over
the candidates) and `ok` `[B]`: True where that answer provably equals the full-sort reference's. The
callers (processors.py, samplers_llamacpp.py) patch the other rows with the reference through
`candidates.resolve`.

    >>> from decodebench.decoding.transforms.filters import top_p
    >>> x = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    >>> cut, ok = top_p_cut(x, torch.tensor([[0.3]]), torch.tensor([[1]]), k=2)
    >>> cut, ok                                     # keep logits >= 2 (probs .64 .24 .09 .03)
    (tensor([[2.]]), tensor([True]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decodebench.decoding.transforms.candidates import Candidates, LANES, as_reference_output, compute_dtype, unit_roundoff

NEG_INF = -math.inf


_LANE_STEPS: dict = {}


def _lane_steps(n: int, device) -> Tensor:
    """`[n]`: how many partial sums of a lane reduction the element `i` places from the end sits in
    (made once per (n, device): a constant of the step, not three ops of it)."""
    key = (n, str(device))
    if key not in _LANE_STEPS or torch.compiler.is_compiling():
        steps = torch.div(torch.arange(n, device=device) + 1, LANES, rounding_mode="floor") + 3.0
        if torch.compiler.is_compiling():
            return steps
        _LANE_STEPS[key] = steps
    return _LANE_STEPS[key]


def _cum_bounds(c: Candidates, cum: Tensor, rel: Tensor, steps) -> tuple[Tensor, Tensor]:
    """Bounds on the reference's cumsum accumulator at positions with true value `cum` (float64), given
    `rel`, the softmax's relative error bound (`c.softmax_rel_error`).

    `steps` `[B, n]`, `[n]` or a number: how many accumulation steps precede each position (a half-type
    cumsum accumulates in float32, one rounding per step; a float32 one in float64: unused)."""
    absolute = c.absolute_slack()
    if c.dtype in (torch.float16, torch.bfloat16):
        fi = torch.finfo(c.dtype)
        rel = rel + unit_roundoff(c.dtype) + unit_roundoff(torch.float32) * (steps + 1)
        absolute = absolute + c.v * fi.tiny * fi.eps  # probabilities below the normal range round absolutely
    lo = (cum * (1 - rel) - absolute).clamp(min=0)
    return lo, cum * (1 + rel) + absolute


def top_p_cut(logits: Tensor, thr: Tensor, mtk: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-p's cut `[B, 1]` and `ok` `[B]` from the `k` best candidates (see `top_p_cut_ids`)."""
    cut, ok, _ = top_p_cut_ids(logits, thr, mtk, k)
    return cut, ok


def top_p_cut_ids(logits: Tensor, thr: Tensor, mtk: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-p's cut `[B, 1]` (keep `logits >= cut`) and `ok` `[B]`, from the `k` best candidates.

    The reference (HF `TopPLogitsWarper`) sorts ascending, takes `cum = softmax.cumsum`, removes the
    positions with `cum <= thr` below the last `mtk`. Ascending, the tail (every token outside the
    candidates) comes first: its mass is `tail`, then the candidates ascending. A row is ok when the
    tail's last position is certainly removed, each candidate position is certainly removed or
    certainly kept, and no tie straddles the cut. `thr` `[B, 1]` in the logits' dtype (`-inf`: off).
    Also returns the candidates' ids `[B, k]`: an ok row with top-p on keeps only tokens among them."""
    c = Candidates(logits, k)
    asc_e = c.e.flip(-1)
    cum = (c.tail + asc_e.cumsum(dim=-1)) / c.s  # [B, k], the true cumulative mass, ascending block
    # every tail token sits in at most ceil(V / L) + 3 partials; candidate i (descending) in ceil((i+1)/L) + 3
    steps = _lane_steps(k, logits.device)
    mass_rank = (c.e * steps).sum(-1, keepdim=True) / c.s + c.tail / c.s * (c.v // LANES + 3)
    half = logits.dtype in (torch.float16, torch.bfloat16)
    acc_steps = torch.arange(c.v - k, c.v, device=logits.device) if half else None
    rel = c.softmax_rel_error(mass_rank)
    lo, hi = _cum_bounds(c, cum, rel, acc_steps)
    _, tail_hi = _cum_bounds(c, c.tail / c.s, rel, float(c.v - k))
    out_lo, out_hi = as_reference_output(lo, hi, logits.dtype)
    tail_out = as_reference_output(tail_hi, tail_hi, logits.dtype)[1]
    jb = torch.arange(k, device=logits.device)
    movable = jb < k - mtk
    removed = ((out_hi <= thr) & movable).sum(-1, keepdim=True)
    maybe = (~((out_lo > thr) | ~movable)).sum(-1, keepdim=True)
    asc = c.vals.flip(-1)
    first_kept = asc.gather(1, removed.clamp(max=k - 1))
    last_removed = torch.where(removed > 0, asc.gather(1, (removed - 1).clamp(min=0)), c.nxt)
    tie = (last_removed == first_kept) & (first_kept != NEG_INF)
    off = thr == NEG_INF
    ok = c.finite & (tail_out <= thr) & (removed == maybe) & ~tie & (mtk <= k)
    return torch.where(off, NEG_INF, first_kept), (ok | off)[:, 0], c.ids


def mirostat_v2_kept(logits: Tensor, mu: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mirostat 2.0's kept mask `[B, V]` and `ok` `[B]`, from the `k` best candidates.

    The reference (llama.cpp) sorts descending (stably), forms float32 probabilities and drops every
    position from the first with `-log2 p > mu` on, except position 0. Surprise grows down the sorted
    row, so that is: keep `-log2 p <= mu`, plus the first argmax. A row is ok when every candidate is
    certainly over or certainly under `mu` and the last candidate is certainly over (every token outside
    scores no higher). `mu` `[B, 1]` in float32 (float64 for float64 logits)."""
    c = Candidates(logits, k)
    # descending, candidate i sits in at most ceil((V - i) / L) + 3 partials: bound it by V / L + 3
    rel = c.softmax_rel_error(torch.full_like(c.s, c.v // LANES + 3.0))
    u = unit_roundoff(compute_dtype(logits.dtype))
    p = c.e / c.s
    s_lo = -torch.log2(p * (1 + rel)) * (1 - 4 * u) - 4 * u  # the reference's log2: within an ulp or two
    s_hi = -torch.log2((p * (1 - rel)).clamp(min=1e-300)) * (1 + 4 * u) + 4 * u
    m = mu.double()
    under = (s_hi <= m).sum(-1, keepdim=True)
    not_over = (~(s_lo > m)).sum(-1, keepdim=True)
    ok = c.finite & (under == not_over) & (not_over < k)
    cut = torch.where(under > 0, c.vals.gather(1, (under - 1).clamp(min=0)), math.inf)
    first = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.argmax(dim=-1, keepdim=True), True)
    return (logits >= cut) | first, ok[:, 0]


def xtc_removed(logits: Tensor, fires: Tensor, t: Tensor, mtk: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """XTC's removed mask `[B, V]` and `ok` `[B]`, from the `k` best candidates.

    The reference (llama.cpp) sorts descending (stably), takes the leading run of float32 probabilities
    `>= t`, and on a firing row drops all of that run but its last token. A row is ok when the run ends
    certainly inside the candidates (each candidate certainly above or certainly below `t`) and no tie
    straddles its last token (the stable sort would pick the smaller id). `fires` `[B, 1]`: the row's
    coin, probability, threshold and candidate-count conditions; `t` `[B, 1]` float32."""
    c = Candidates(logits, k)
    rel = c.softmax_rel_error(torch.full_like(c.s, c.v // LANES + 3.0))
    p = c.e / c.s
    tt = t.double()
    above = (p * (1 - rel) >= tt).int().cumprod(dim=-1).sum(-1, keepdim=True)
    maybe = (p * (1 + rel) >= tt).int().cumprod(dim=-1).sum(-1, keepdim=True)
    pos_last = (above - 1).clamp(min=0)
    n = torch.isfinite(logits).sum(dim=-1, keepdim=True)
    on = fires & (n - pos_last >= mtk) & (pos_last > 0)
    last = c.vals.gather(1, (pos_last - 1).clamp(min=0))
    tie = last == c.vals.gather(1, pos_last.clamp(max=k - 1))
    ok = ~fires | (c.finite & (above == maybe) & (above < k) & ~(on & tie))
    return on & (logits >= last), ok[:, 0]
