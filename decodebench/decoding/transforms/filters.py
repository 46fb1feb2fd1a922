"""Filtering transforms ("warpers"): pure batched functions `[B, V] -> [B, V]`.

Each takes `logits` `[B, V]` (float32 or float64) and returns a new tensor of the same shape and dtype in
which removed tokens hold `-inf`. Every parameter is either a Python number (the whole batch) or a `[B]`
tensor (one value per row). Each equals the Hugging Face processor of the same name
(`transformers.generation.logits_process`) bit for bit on CPU: the kept set (ties, `-inf` inputs,
`min_tokens_to_keep`, `top_p = 1.0`, `top_k > V`) and the kept values.

Why the arithmetic looks fussy: HF keeps its parameters as Python floats, so `1 - top_p` is computed in
double and then rounded to the logits dtype when compared. We do per-row parameter arithmetic on `[B, 1]`
float64 columns and round once, in the same place. Pass float64 tensors (the chain does) for bit-equality;
a float32 `[B]` tensor works but may differ from HF in the last bit of a threshold.

Keyword-only hints (`k_max`, `keep_max`, `keep_sizes`, `support`) are plain Python values the chain
computes once when it packs a batch; left out, they are read from the tensors (a device sync, fine
outside the hot loop).

A row is disabled by its neutral value: temperature 1, top_k 0 (or >= V), top_p `inf`, min_p 0,
typical_p `inf`, epsilon 0, eta 0. (`top_p = 1.0` is *not* neutral in HF's processor: it still drops
tokens whose probability underflows to 0, and so does ours. `generate()` never applies top_p = 1.)

Example::

    >>> x = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    >>> top_k(x, torch.tensor([2, 0]))          # row 1 disabled (0 = off, as in HF)
    tensor([[2., 1., -inf, -inf],
            [0., 0., 0., 0.]])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from decodebench.decoding.transforms.candidates import DEFAULT_K, failing_rows, offer, on_host, resolve, usable
from decodebench.decoding.transforms.sortfree import top_p_cut_ids
from decodebench.decoding.transforms.sortfree_more import typical_cut, typical_scores

NEG_INF = -math.inf


# ---------------------------------------------------------------------------------------------- helpers
def column(x, logits: Tensor, dtype: torch.dtype = torch.float64, name: str = "parameter") -> Tensor:
    """A parameter as a `[B, 1]` column on logits' device: a Python number or a `[B]` tensor."""
    b = logits.shape[0]
    if isinstance(x, Tensor):
        if x.dim() == 0:
            x = x.expand(b)
        if x.dim() == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 1 or x.shape[0] != b:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected a number or a [{b}] tensor")
        return x.to(device=logits.device, dtype=dtype).unsqueeze(1)
    return torch.full((b, 1), x, dtype=dtype, device=logits.device)


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype torch computes `tensor op python_float` in: float32 for half types, else the dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scalar_op(logits: Tensor, col: Tensor, op) -> Tensor:
    """`op(logits, col)` rounded once to the logits dtype, as HF's `scores op python_float`.

    On bf16/fp16 logits torch does the arithmetic in float32 with the scalar kept in float32, then
    rounds once; rounding the parameter to bf16 first would change it (min_p 0.3 -> 0.30078125).
    """
    om = opmath(logits.dtype)
    return op(logits.to(om), col.to(om)).to(logits.dtype)


def _drop(logits: Tensor, remove: Tensor) -> Tensor:
    """`-inf` where `remove`: one pass (`masked_fill` out of place is a copy plus a fill)."""
    return torch.where(remove, NEG_INF, logits)


def _static_max(x: Tensor, hint: int | None) -> int:
    return int(x.max()) if hint is None else hint  # int(): one sync, only when no hint was packed


def _kth_largest(logits: Tensor, k: Tensor, k_max: int) -> Tensor:
    """`[B, 1]` value of each row's k-th largest logit (k in 1..k_max), by one topk for the batch."""
    if k_max == 1:
        return logits.amax(dim=-1, keepdim=True)
    vals = torch.topk(logits, k_max, dim=-1).values
    return vals.gather(1, (k.clamp(1, k_max) - 1))


# ------------------------------------------------------------------------------------------- temperature
def temperature(logits: Tensor, temperature, *, any_zero: bool | None = None) -> Tensor:
    """`logits / t` per row; `t = 0` keeps only the row's argmax (greedy), unchanged.

    HF rejects 0; we define it as llama.cpp does (temp <= 0 keeps the single most likely token), so a
    temperature-0 row is greedy whatever sampler follows. Ties keep the first argmax, like `torch.argmax`.

    >>> temperature(torch.tensor([[1.0, 3.0, 2.0]]), 0.0)
    tensor([[-inf, 3., -inf]])
    """
    t = column(temperature, logits, name="temperature")
    zero = t == 0
    out = scalar_op(logits, torch.where(zero, 1.0, t), torch.div)  # x / 1 == x: disabled rows unchanged
    if any_zero is None:
        any_zero = bool(zero.any())
    if any_zero:
        best = logits.argmax(dim=-1, keepdim=True)
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, best, True)
        out = _drop(out, zero & ~keep)
    return out


# ------------------------------------------------------------------------------------------------- top-k
def top_k(logits: Tensor, top_k, min_tokens_to_keep=1, *, k_max: int | None = None) -> Tensor:
    """Keep tokens scoring at least the row's k-th largest logit (ties at the k-th value all stay).

    `k_eff = max(top_k, min_tokens_to_keep)` as in HF; `top_k` 0 or >= V leaves the row unchanged. One
    `torch.topk(k_max)` for the batch, then a per-row threshold gathered at `k_eff - 1`: no sort.
    `k_max` is the largest `k_eff` among rows with `0 < k_eff < V`.

    >>> top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 1)   # a tie at the k-th value: both kept
    tensor([[-inf, 3., 3., -inf]])
    """
    v = logits.shape[-1]
    asked = column(top_k, logits, torch.long, "top_k")
    k = torch.maximum(asked, column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep"))
    on = (asked > 0) & (k < v)
    if k_max is None:
        k_max = int(torch.where(on, k, 0).max())
    if k_max == 0:
        return logits.clone()
    return _drop(logits, logits < _top_k_cut(_kth_largest(logits, k, min(k_max, v)), on))


def _top_k_cut(kth: Tensor, on: Tensor) -> Tensor:
    return torch.where(on, kth, NEG_INF)  # nothing is < -inf: disabled rows keep every token


# ------------------------------------------------------------------------------------------------- top-p
def top_p(logits: Tensor, top_p, min_tokens_to_keep=1, *, support: int | None = None,
          candidates: int = DEFAULT_K) -> Tensor:
    """Nucleus filtering exactly as HF's `TopPLogitsWarper`: drop the ascending-sorted prefix whose
    cumulative probability is `<= 1 - top_p`, then re-keep the `min_tokens_to_keep` most likely.

    HF sorts the whole vocabulary. When the caller knows that at most `support` tokens per row can be
    finite (top-k ran first), rows whose `support + 1`-th largest logit is `-inf` skip the sort on CPU:
    HF's sorted row is then `[-inf, ..., top block ascending]`, which we rebuild from one small
    `torch.topk`, so softmax and cumsum see the very same array and give the same bits. A row where a
    tie straddles the cut (HF's unstable sort decides which tied token goes) falls back to the sort.
    Accelerators always sort: checking the shortcut per row would cost a device sync.

    Otherwise no sort either, unless a row needs it: `candidates.py` takes the `candidates` largest
    logits per row, proves per row that the reference keeps the same set, and sorts only the rows where
    it cannot prove it (`candidates=0`: always sort).

    >>> top_p(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), 0.7)   # probs .64 .24 .09 .03
    tensor([[3., 2., -inf, -inf]])
    """
    p = column(top_p, logits, name="top_p")
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    thr = (1 - p).to(logits.dtype)  # HF: `cum <= (1 - top_p)`, the double rounded to the logits dtype
    if not _block_path(logits, support):
        return _top_p_candidates(logits, thr, mtk, candidates)
    asc = torch.topk(logits, support + 1, dim=-1).values.flip(-1)  # ascending: the tail of HF's sort
    cut, ok = _top_p_cut(asc, thr, mtk, logits.shape[-1])
    return _patch_rows(_drop(logits, logits < cut), ok, lambda i: _top_p_sorted(logits[i], thr[i], mtk[i]))


def _top_k_then_top_p(logits: Tensor, k, p, min_tokens_to_keep, k_max: int) -> Tensor:
    """The two filters one after the other (top_k_top_p's fallback, whose parameters shadow their names)."""
    return top_p(top_k(logits, k, min_tokens_to_keep, k_max=k_max), p, min_tokens_to_keep)


def top_k_top_p(logits: Tensor, top_k, top_p, min_tokens_to_keep=1, *, k_max: int | None = None,
                support: int | None = None) -> Tensor:
    """`top_p(top_k(logits))` with the same bits, fused: one `topk` serves both cuts (the chain uses
    this when top_p directly follows top_k). `support` (>= every effective k) as in `top_p`; rows where
    top_k is off or ties overflow the support take the sort."""
    v = logits.shape[-1]
    asked = column(top_k, logits, torch.long, "top_k")
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    k = torch.maximum(asked, mtk)
    on = (asked > 0) & (k < v)
    if k_max is None:
        k_max = int(torch.where(on, k, 0).max())  # a sync; the chain packs it
    if not _block_path(logits, support) or support < k_max:
        return _top_k_then_top_p(logits, top_k, top_p, min_tokens_to_keep, k_max)
    thr = (1 - column(top_p, logits, name="top_p")).to(logits.dtype)
    vals = torch.topk(logits, support + 1, dim=-1).values  # descending; support >= every k in use
    k_cut = _top_k_cut(vals.gather(1, (k.clamp(1, support + 1) - 1)), on)
    after_k = torch.where(vals < k_cut, NEG_INF, vals)  # the top of top_k's output, still sorted
    p_cut, ok = _top_p_cut(after_k.flip(-1), thr, mtk, v)

    def slow(i: Tensor) -> Tensor:
        return _top_p_sorted(_drop(logits[i], logits[i] < k_cut[i]), thr[i], mtk[i])

    return _patch_rows(_drop(logits, logits < torch.maximum(k_cut, p_cut)), ok, slow)


def _block_path(logits: Tensor, support: int | None) -> bool:
    # accelerators always sort: checking the shortcut per row would cost a device sync
    return support is not None and support + 1 < logits.shape[-1] and on_host(logits)


def _patch_rows(out: Tensor, ok: Tensor, slow) -> Tensor:
    """Recompute the rows where `ok` is False with `slow(row_index)` (CPU only: found by `nonzero`,
    no scalar read)."""
    bad = failing_rows(ok)
    if bad.numel():
        out[bad] = slow(bad)
    return out


def _top_p_candidates(logits: Tensor, thr: Tensor, mtk: Tensor, k: int, retry: bool = True) -> Tensor:
    if not k or not usable(logits, 2 * k):  # no gain when the candidates near the vocabulary's size
        return _top_p_sorted(logits, thr, mtk)
    cut, ok, ids = top_p_cut_ids(logits, thr, mtk, k)
    if retry:  # the sampler may race over the candidates of rows whose kept set lies within them
        offer(ids, ok & (thr != NEG_INF)[:, 0])

    def slow(i: Tensor) -> Tensor:  # eager rows that fail retry once with 4x the candidates, then sort
        if retry:
            return _top_p_candidates(logits[i], thr[i], mtk[i], 4 * k, retry=False)
        return _top_p_sorted(logits[i], thr[i], mtk[i])

    return resolve(_drop(logits, logits < cut), ok, slow, lambda: _top_p_sorted(logits, thr, mtk))


def _top_p_sorted(logits: Tensor, thr: Tensor, mtk: Tensor) -> Tensor:
    v = logits.shape[-1]
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = (cum <= thr) & (torch.arange(v, device=logits.device) < v - mtk)
    return _drop(logits, remove.scatter(1, sorted_idx, remove))


def _top_p_cut(asc: Tensor, thr: Tensor, mtk: Tensor, v: int) -> tuple[Tensor, Tensor]:
    """Top-p's cut value `[B, 1]` from a row's largest `s` logits in ascending order, `[B, s]`.

    Valid (`ok`) when nothing finite lies outside the block (`asc[:, 0]` is -inf): HF's sorted row is
    then `[-inf, ..., asc]`, which we rebuild, so softmax sees the very same array; the prefix of its
    cumsum is exact zeros, so the cumsum over the block alone gives the same bits. A tie straddling the
    cut is not ok either (HF's unstable sort decides which tied token stays). Rows with `thr = -inf`
    (top_p off) keep everything and are always ok.
    """
    b, s = asc.shape
    full = asc.new_full((b, v), NEG_INF)
    full[:, v - s :] = asc
    cum = full.softmax(dim=-1)[:, v - s :].cumsum(dim=-1)
    j = torch.arange(s, device=asc.device)
    remove = (cum <= thr) & (j < s - mtk)  # cum is non-decreasing: `remove` is a prefix of the block
    r = remove.sum(dim=-1, keepdim=True)  # at most s - 1, since mtk >= 1
    first_kept, last_removed = asc.gather(1, r), asc.gather(1, (r - 1).clamp(min=0))
    tie = (r > 0) & (last_removed == first_kept) & (first_kept != NEG_INF)
    off = thr == NEG_INF
    ok = ((asc[:, :1] == NEG_INF) & ~tie) | off
    return torch.where(off, NEG_INF, first_kept), ok[:, 0]


# ------------------------------------------------------------------------------------------------- min-p
def min_p(logits: Tensor, min_p, min_tokens_to_keep=1, *, keep_sizes: Sequence[int] | None = None) -> Tensor:
    """Drop tokens with `prob < min_p * max_prob` (HF `MinPLogitsWarper`); min_p 0 keeps all.

    HF re-keeps the `min_tokens_to_keep` most likely tokens by index (`torch.topk`), so among tied
    probabilities the choice depends on k: we run one topk per distinct value (`keep_sizes`, packed by
    the chain) rather than one for the largest, to pick the very tokens HF picks.

    >>> min_p(torch.tensor([[2.0, 1.0, -2.0]]), 0.2)   # probs .72 .26 .01; cut .14
    tensor([[2., 1., -inf]])
    """
    probs = torch.softmax(logits, dim=-1)
    top = probs.amax(dim=-1, keepdim=True)
    remove = probs < scalar_op(top, column(min_p, logits, name="min_p"), torch.mul)
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    if keep_sizes is None:
        keep_sizes = sorted(set(mtk.flatten().tolist()))  # a sync; the chain packs this
    for m in keep_sizes:
        # m == 1: the top token is never below min_p * itself (min_p <= 1), nothing to re-keep
        if min(m, logits.shape[-1]) > 1:
            idx = torch.topk(probs, min(m, logits.shape[-1]), dim=-1).indices
            remove.scatter_(1, idx, remove.gather(1, idx) & (mtk != m))
    return _drop(logits, remove)


# ----------------------------------------------------------------------------------------------- typical
def typical(logits: Tensor, typical_p, min_tokens_to_keep=1, *, candidates: int = DEFAULT_K) -> Tensor:
    """Locally typical filtering (HF `TypicalLogitsWarper`): keep the tokens whose surprisal is closest
    to the entropy until their mass reaches `typical_p`.

    HF sorts the whole vocabulary by score. Here the `candidates` most typical tokens (one `topk` of the
    scores) decide each row they provably can (sortfree_more.py: on LM-like rows 97% at p 0.5, 70% at
    0.9, 47% at 0.95; almost no flat row at p >= 0.9); the other rows sort (`candidates=0`: always sort). Compiled, the
    step sorts: the proof needs the reference's own scores bit for bit, and inductor computes the
    log-softmax and entropy in its own order, so its scores (and the eager ones) may differ in a bit.

    >>> typical(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), 0.5)   # surprisal nearest the entropy first
    tensor([[3., 2., -inf, -inf]])
    """
    mass = column(typical_p, logits, name="typical_p").to(logits.dtype)
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    scores = typical_scores(logits)
    if not candidates or torch.compiler.is_compiling() or not usable(logits, 2 * candidates):
        return _typical_sorted(logits, scores, mass, mtk)
    cut, ok = typical_cut(logits, scores, mass, mtk, candidates)
    return resolve(_drop(logits, scores > cut), ok, lambda i: _typical_sorted(logits[i], scores[i], mass[i], mtk[i]),
                   lambda: _typical_sorted(logits, scores, mass, mtk))


def _typical_sorted(logits: Tensor, shifted: Tensor, mass: Tensor, mtk: Tensor) -> Tensor:
    v = logits.shape[-1]
    sorted_scores, sorted_idx = torch.sort(shifted, descending=False)
    cum = logits.gather(-1, sorted_idx).softmax(dim=-1).cumsum(dim=-1)
    last = (cum < mass).sum(dim=1, keepdim=True).clamp_(max=v - 1)
    remove = sorted_scores > sorted_scores.gather(1, last)
    remove &= torch.arange(v, device=logits.device) >= mtk
    remove = remove.scatter(1, sorted_idx, remove)
    return _drop(logits, remove)


# ------------------------------------------------------------------------------------- epsilon and eta
def _keep_floor(logits: Tensor, min_tokens_to_keep, keep_max: int | None) -> Tensor:
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep").clamp(max=logits.shape[-1])
    return _kth_largest(logits, mtk, min(_static_max(mtk, keep_max), logits.shape[-1]))


def epsilon(logits: Tensor, epsilon_cutoff, min_tokens_to_keep=1, *, keep_max: int | None = None) -> Tensor:
    """Drop tokens with `prob < epsilon_cutoff` but keep the `min_tokens_to_keep` best (HF
    `EpsilonLogitsWarper`); epsilon 0 keeps all.

    >>> epsilon(torch.tensor([[2.0, 1.0, -2.0]]), 0.05)
    tensor([[2., 1., -inf]])
    """
    probs = logits.softmax(dim=-1)
    remove = probs < column(epsilon_cutoff, logits, name="epsilon_cutoff").to(logits.dtype)
    remove &= logits < _keep_floor(logits, min_tokens_to_keep, keep_max)
    return _drop(logits, remove)


def eta(logits: Tensor, eta_cutoff, min_tokens_to_keep=1, *, keep_max: int | None = None) -> Tensor:
    """Eta sampling (HF `EtaLogitsWarper`): drop `prob < min(eps, sqrt(eps) * exp(-entropy))`.

    HF holds eps as a float32 tensor whatever the logits dtype; we round it the same way.

    >>> eta(torch.tensor([[2.0, 1.0, -2.0]]), 0.05)
    tensor([[2., 1., -inf]])
    """
    probs = logits.softmax(dim=-1)
    # torch.distributions.Categorical(logits=...).entropy(), without its validation sync
    norm = logits - logits.logsumexp(dim=-1, keepdim=True)
    ent = -(torch.clamp(norm, min=torch.finfo(norm.dtype).min) * norm.softmax(dim=-1)).sum(-1, keepdim=True)
    eps32 = column(eta_cutoff, logits, name="eta_cutoff").to(torch.float32)
    cut = torch.minimum(eps32.to(logits.dtype), torch.sqrt(eps32).to(logits.dtype) * torch.exp(-ent))
    remove = (probs < cut) & (logits < _keep_floor(logits, min_tokens_to_keep, keep_max))
    return _drop(logits, remove)
