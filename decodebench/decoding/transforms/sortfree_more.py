"""Sort-free paths of typical, tail-free and mirostat 1.0, on the shared candidate machinery (candidates.py).

Same contract as sortfree.py: each function returns what its transform needs to finish without a sort (a
cut value, a kept mask) and `ok` `[B]`, True where that answer provably equals the full-sort reference's;
the callers (filters.typical, llamacpp.tail_free, llamacpp.mirostat_v1) patch the other rows with the
reference through `candidates.resolve`.

How often a row is decided without a sort (`decided_fractions` below, on `[64, 49152]` rows, K = 1024;
"peaked" is the tests' Zipf-shaped rows, "flat" is `randn * 3`; test_sortfree_more.py keeps a check):

| float32 rows            | typical 0.5 / 0.9 / 0.95 | tail-free 0.9 / 0.95 | mirostat 1.0, mu 10 |
| peaked                  | 97% / 70% / 47%          | 98% / 97%            | 97%                 |
| flat                    | 42% / 0% / 0%            | 47% / 17%            | 94%                 |
| peaked, bfloat16 logits | 97% / 22% / 3%           | 100% / 89%           | 98%                 |

Why, and why these designs:

- typical: the reference's softmax runs over the row in score order, so the candidates sit at the front
  of every lane and the proven bound on the sum's error is `u (V / 8 + 3)`, ~3.7e-4 of the mass. Near a
  0.9 mass a flat row's tokens carry ~3e-4 each, so the cut is rarely the only one inside the bound;
  those rows sort (bfloat16 adds each probability's 2^-8 rounding). The scores themselves are exact:
  both paths compute them with the same ops (`typical_scores`), an O(V) pass, not a sort.
- tail-free: the normalised second differences are ratios, so the softmax sum's error cancels, and
  the differences past the candidates add up to at most the last two candidates' probabilities. A
  flat row spreads its differences over the whole row, and its cut often lies past the candidates.
- mirostat 1.0: only the top 100 probabilities enter, through their ratios; the interval carried to
  `k` is ~1e-4 wide, so a row sorts when `k` is that close to an integer, when `|s - 1| < 1e-3`, or when
  `k` exceeds the candidates but not the finite tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decodebench.decoding.transforms.candidates import (Candidates, LANES, as_reference_output, compute_dtype,
                                                        unit_roundoff)
from decodebench.decoding.transforms.sortfree import _cum_bounds

NEG_INF = -math.inf


def _u(dtype: torch.dtype) -> float:
    """The reference's unit roundoff, widened for float64 references: the bounds are computed in float64
    themselves, and a few of our own roundings must not eat a margin of a few of theirs."""
    return unit_roundoff(compute_dtype(dtype)) * (64 if dtype == torch.float64 else 1)


def _finite_count(logits: Tensor) -> Tensor:
    return torch.isfinite(logits).sum(dim=-1, keepdim=True)


def _first_stable(logits: Tensor, c: Candidates, last: Tensor, n: Tensor) -> Tensor:
    """`[B, V]`: the first `last` `[B, 1]` tokens of a stable descending sort (`last` in 1..k, or >= `n`,
    the finite count: every token). Tokens tied at the cut go in id order, as a stable sort puts them;
    `rank` (a cumsum over the row) numbers them."""
    cv = c.vals.gather(1, (last - 1).clamp(min=0, max=c.k - 1))
    need = last - (c.vals > cv).sum(dim=-1, keepdim=True)  # every token above the cut is a candidate
    tied = logits == cv
    keep = (logits > cv) | (tied & (tied.cumsum(dim=-1) <= need))
    return keep | (last >= n)


# ------------------------------------------------------------------------------------------------ typical
def typical_scores(logits: Tensor) -> Tensor:
    """HF `TypicalLogitsWarper`'s scores `|-log p - H|` `[B, V]` (the entropy over the whole row, an O(V)
    reduction). The reference and the sort-free path share these ops, so they see the very same bits."""
    normalized = torch.nn.functional.log_softmax(logits, dim=-1)
    p = torch.exp(normalized)
    ent = -(normalized * p).nansum(-1, keepdim=True)
    return torch.abs((-normalized) - ent)


def typical_cut(logits: Tensor, scores: Tensor, mass: Tensor, mtk: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Typical's cut `[B, 1]` (keep `scores <= cut`) and `ok` `[B]`, from the `k` most typical tokens.

    The reference sorts the scores ascending, takes `cum = softmax(logits in that order).cumsum`, finds
    `last = #(cum < mass)` and keeps every score `<= scores[last]` plus the first `mtk` positions. The
    candidates are the `k` smallest scores (`topk(-scores)`). Tied scores keep or drop together, so only
    the cumulative mass at the end of each run of equal scores matters, and that does not depend on the
    reference's (unstable) order inside the run. A row is ok when every run end before the cut is
    certainly below `mass`, the first that is not is certainly at or above it, and `mtk`, where it binds,
    does not split a run. `mass` `[B, 1]` in the logits' dtype (`inf`: off)."""
    low = torch.topk(scores, k + 1, dim=-1, largest=False)
    sv = low.values
    c = Candidates.at(logits, low.indices[:, :k])
    cum = c.e.cumsum(dim=-1) / c.s
    # in score order the candidates come first: each sits in up to V / L + 3 partials of the softmax sum
    rel = c.softmax_rel_error(torch.full_like(c.s, c.v // LANES + 3.0))
    half = logits.dtype in (torch.float16, torch.bfloat16)
    lo, hi = _cum_bounds(c, cum, rel, torch.arange(k, device=logits.device) if half else None)
    out_lo, out_hi = as_reference_output(lo, hi, logits.dtype)
    run_end = sv[:, :k] != sv[:, 1:]
    blocking = run_end & ~(out_hi < mass)
    found = blocking.any(dim=-1, keepdim=True)
    a = blocking.int().argmax(dim=-1, keepdim=True)
    reached = out_lo.gather(1, a) >= mass
    j = (mtk - 1).clamp(min=0)
    split = sv.gather(1, j.clamp(max=k - 1)) == sv.gather(1, mtk.clamp(min=1, max=k))
    keeps_ok = (j <= a) | ((mtk <= k) & ~split)
    off = mass == math.inf
    ok = c.finite & found & reached & keeps_ok
    cut = sv.gather(1, torch.maximum(a, j).clamp(max=k - 1))
    return torch.where(off, math.inf, cut), (ok | off)[:, 0]


# ---------------------------------------------------------------------------------------------- tail-free
def tail_free_kept(logits: Tensor, z: Tensor, mtk: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Tail-free's kept mask `[B, V]` and `ok` `[B]`, from the `k` best candidates.

    The reference (llama.cpp) sorts descending (stably), forms float32 probabilities `p`, the absolute
    second differences `d2_i = |p_i - 2 p_(i+1) + p_(i+2)|` over the finite tokens, normalises them by
    their total, and keeps the positions before the first whose running sum exceeds `z` (at a position
    >= `mtk`). Every quantity is a ratio of probabilities, so the softmax sum's error cancels; what is
    left is each `p`'s own rounding (exp and the product: 5u), carried through the two differences (2u
    more) as an absolute error of `8u (p_i + 2 p_(i+1) + p_(i+2))`, the total's summation error, and the
    tail: the second differences past the candidates add up to at most `p_(k-2) + p_(k-1)` (the first
    differences of a sorted row are >= 0 and sum to less than its first term). A row is ok when the first
    candidate position that could exceed `z` certainly does; tokens tied at the cut go in id order (the
    stable sort's). `z` `[B, 1]` in float32 (float64 for float64 logits)."""
    c = Candidates(logits, k)
    n = _finite_count(logits)
    u = _u(logits.dtype)
    fi = torch.finfo(compute_dtype(logits.dtype))
    e = c.e  # the probabilities up to one common factor, which every ratio below cancels
    d1 = e[:, :-1] - e[:, 1:]
    pos = torch.arange(k - 2, device=logits.device)
    valid = pos < n - 2
    d2 = torch.where(valid, (d1[:, :-1] - d1[:, 1:]).abs(), 0.0)
    w = torch.where(valid, e[:, :-2] + 2 * e[:, 1:-1] + e[:, 2:], 0.0)
    subnormal = 4 * fi.tiny * fi.eps * c.s  # a probability below the normal range rounds absolutely
    num = d2.cumsum(dim=-1)
    err = 8 * u * w.cumsum(dim=-1) + subnormal * (pos + 1)
    tail_mass = c.tail + 3 * unit_roundoff(compute_dtype(logits.dtype)) * c.s + e[:, -2:].sum(-1, keepdim=True)
    tail = torch.where(n > k, e[:, -2:].sum(-1, keepdim=True) + 8 * u * 4 * tail_mass + subnormal * c.v, 0.0)
    sigma = 1.01 * u * (c.v // LANES + 3)  # the total's float sum: at most V / L + 3 roundings per term
    t_lo = (num[:, -1:] - err[:, -1:]).clamp(min=0) * (1 - sigma)
    t_hi = (num[:, -1:] + err[:, -1:] + tail) * (1 + sigma)
    slack = c.absolute_slack() + c.v * fi.tiny * fi.eps
    lo = (num - err).clamp(min=0) / t_hi * (1 - 2 * u) - slack
    hi = (num + err) / t_lo * (1 + 2 * u) + slack
    out_lo, out_hi = as_reference_output(lo, hi, compute_dtype(logits.dtype))
    zz = z.to(out_lo.dtype)
    eligible = valid & (pos >= mtk)
    blocking = eligible & ~(out_hi <= zz)
    found = blocking.any(dim=-1, keepdim=True)
    a = blocking.int().argmax(dim=-1, keepdim=True)
    hit = out_lo.gather(1, a) > zz
    rel = c.softmax_rel_error(torch.full_like(c.s, c.v // LANES + 3.0))
    normalised = t_lo / c.s * (1 - rel) > 1e-6 * (1 + 1e-6)  # else the reference's uniform fallback
    last = torch.where(found, a, n)
    decided = torch.where(found, hit, n <= k)
    on = (z < 1) & (n > 2)
    ok = ~on | (c.finite & normalised & decided & (last > 0))
    return _first_stable(logits, c, last, n) | ~on, ok[:, 0]


# ---------------------------------------------------------------------------------------------- mirostat
def _times(a_lo: Tensor, a_hi: Tensor, b_lo: Tensor, b_hi: Tensor) -> tuple[Tensor, Tensor]:
    """The product of two intervals (the extremes of its four corners)."""
    corners = torch.stack([a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi])
    return corners.amin(0), corners.amax(0)


def _widen(lo: Tensor, hi: Tensor, r: float) -> tuple[Tensor, Tensor]:
    """`[lo, hi]` widened by a relative error `r` (one or a few float roundings of the reference's)."""
    return lo - r * lo.abs(), hi + r * hi.abs()


def mirostat_v1_kept(logits: Tensor, mu: Tensor, vocab_size: int, m: int, k: int) -> tuple[Tensor, Tensor]:
    """Mirostat 1.0's kept mask `[B, V]` and `ok` `[B]`, from the `k >= m` best candidates.

    The reference (llama.cpp) sorts descending (stably) and estimates the Zipf exponent `s` from the top
    `m` float32 probabilities, `s = sum t_i b_i / sum t_i^2` with `t_i = log((i+2)/(i+1))` and
    `b_i = log(p_i / p_(i+1))`, then keeps the top `floor(k)` tokens,
    `k = (eps 2^mu / (1 - N^-eps))^(1/s)`, `eps = s - 1`. Only ratios of probabilities enter, so the
    softmax sum's error cancels; we carry an interval through every float32 step, each widened by that
    op's rounding (log, pow, exp: within 2 ulps), and call a row ok when both ends give the same
    `floor(k)`, that many tokens lie among the candidates (or cover every finite token); tokens tied
    at the cut go in id order (the stable sort's). Rows with `|eps| < 1e-3` (where `1 - N^-eps`
    cancels) or an overflowing step fall back. `mu` `[B, 1]` float32 (float64 for float64 logits)."""
    c = Candidates(logits, k)
    v, n, u = logits.shape[-1], _finite_count(logits), _u(logits.dtype)
    om = compute_dtype(logits.dtype)
    fmax = torch.finfo(om).max / 4
    j = min(m - 1, v - 1)
    i = torch.arange(j, device=logits.device, dtype=om)
    t = torch.log((i + 2) / (i + 1)).double()  # the reference's own t_i (the same op on the same values)
    use = torch.arange(j, device=logits.device) < n - 1
    e = c.e[:, : j + 1]
    normal = torch.where(use, e[:, 1:] / c.s, 1.0).amin(-1, keepdim=True) > 1e-30
    ratio = torch.where(use, e[:, :-1] / torch.where(use, e[:, 1:], 1.0), 1.0)
    b = ratio.log()  # p_i / p_(i+1): 5u per probability, u for the division; log adds 2u of its result
    b_err = 12 * u + 2.1 * u * b.abs()
    terms_lo, terms_hi = _widen(t * (b - b_err), t * (b + b_err), u)
    terms_lo, terms_hi = torch.where(use, terms_lo, 0.0), torch.where(use, terms_hi, 0.0)
    gamma = 1.01 * (j + 2) * u  # a float sum of j terms, in any order
    big = torch.maximum(terms_lo.abs(), terms_hi.abs()).sum(-1, keepdim=True)
    num_lo, num_hi = terms_lo.sum(-1, keepdim=True) - gamma * big, terms_hi.sum(-1, keepdim=True) + gamma * big
    den = torch.where(use, t * t, 0.0).sum(-1, keepdim=True)
    den_lo, den_hi = den * (1 - gamma - u), den * (1 + gamma + u)
    good = normal & (num_lo > 0) & (den_lo > 0)
    num_lo, den_lo = num_lo.clamp(min=1e-300), den_lo.clamp(min=1e-300)
    s_lo, s_hi = _widen(num_lo / den_hi, num_hi / den_lo, u)
    eps_lo, eps_hi = s_lo - 1 - u * (s_lo.abs() + 1), s_hi - 1 + u * (s_hi.abs() + 1)
    good &= (eps_lo > 1e-3) | (eps_hi < -1e-3)
    m64 = mu.double()
    good &= m64 < 120
    p2_lo, p2_hi = _widen(torch.pow(2.0, m64.clamp(max=120)), torch.pow(2.0, m64.clamp(max=120)), 4 * u)
    a_lo, a_hi = _widen(*_times(eps_lo, eps_hi, p2_lo, p2_hi), u)
    nn = float(vocab_size)
    w_lo, w_hi = _widen(torch.pow(nn, -eps_hi), torch.pow(nn, -eps_lo), 4 * u)
    q_lo, q_hi = _widen(1 - w_hi, 1 - w_lo, u)
    good &= (q_lo * q_hi > 0) & (a_lo * a_hi > 0)
    a_abs = (torch.minimum(a_lo.abs(), a_hi.abs()), torch.maximum(a_lo.abs(), a_hi.abs()))
    q_abs = (torch.minimum(q_lo.abs(), q_hi.abs()).clamp(min=1e-300), torch.maximum(q_lo.abs(), q_hi.abs()))
    r_lo, r_hi = _widen(a_abs[0] / q_abs[1], a_abs[1] / q_abs[0], u)
    good &= (r_lo > 1e-30) & (r_hi < fmax) & (a_abs[1] < fmax)
    y_lo, y_hi = _widen(1 / s_hi, 1 / s_lo.clamp(min=1e-300), u)
    ln_lo, ln_hi = _times(y_lo, y_hi, r_lo.clamp(min=1e-300).log(), r_hi.log())
    k_lo, k_hi = _widen(ln_lo.clamp(max=700).exp(), ln_hi.clamp(max=700).exp(), 4 * u)
    kk_lo = torch.where(k_lo >= v, float(v), k_lo.clamp(min=1, max=v).floor())
    kk_hi = torch.where(k_hi >= v, float(v), k_hi.clamp(min=1, max=v).floor())
    kk = torch.where(good, kk_lo, 1.0).long()
    ok = c.finite & good & (kk_lo == kk_hi) & ((kk <= k) | (kk >= n))
    return _first_stable(logits, c, kk, n), ok[:, 0]


def decided_fractions(logits: Tensor, k: int = 1024) -> dict[str, float]:
    """The share of rows each sort-free path decides on `logits` (typical 0.5 / 0.9 / 0.95, tail-free
    z 0.9 / 0.95, mirostat 1.0 at mu 10 = 2 tau for tau 5): how the module's docstring was measured."""
    b = logits.shape[0]
    one = torch.ones(b, 1, dtype=torch.long, device=logits.device)
    om = compute_dtype(logits.dtype)
    out = {}
    scores = typical_scores(logits)
    for p in (0.5, 0.9, 0.95):
        mass = torch.full((b, 1), p, dtype=torch.float64, device=logits.device).to(logits.dtype)
        out[f"typical {p}"] = typical_cut(logits, scores, mass, one, k)[1].float().mean().item()
    for z in (0.9, 0.95):
        zz = torch.full((b, 1), z, dtype=om, device=logits.device)
        out[f"tail_free {z}"] = tail_free_kept(logits, zz, one, k)[1].float().mean().item()
    mu = torch.full((b, 1), 10.0, dtype=om, device=logits.device)
    out["mirostat_v1 mu=10"] = mirostat_v1_kept(logits, mu, logits.shape[-1], 100, k)[1].float().mean().item()
    return out
