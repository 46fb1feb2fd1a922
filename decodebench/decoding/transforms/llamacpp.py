"""llama.cpp's samplers as pure batched transforms: top-nσ, tail-free, XTC, dynamic temperature, mirostat.

Each equals llama.cpp's sampler of the same name (src/llama-sampling.cpp; tail-free from the release before
its removal) on the reference's own test vectors (tests/test-sampling.cpp, ported to
tests/decoding/test_llamacpp.py) and on random logits. llama.cpp drops tokens from a candidate array; here a
dropped token is `-inf`, and a row's candidates are its finite logits. llama.cpp works in float32: on bf16/fp16
logits the statistics are computed in float32 and only the kept set (or the one division) reaches the logits.

Parameters are per row (`[B]` tensors or numbers); each function's "off" value leaves a row unchanged.

    >>> x = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    >>> top_n_sigma(x, 1.0).isinf().tolist()      # keeps tokens within 1 std of the max logit
    [[True, True, False, False]]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decodebench.decoding.transforms.candidates import DEFAULT_K, resolve, usable
from decodebench.decoding.transforms.filters import NEG_INF, column, opmath
from decodebench.decoding.sampling import row_uniform
from decodebench.decoding.transforms.binding import builtin, float_column, min_keep, on_rows_only, rows_of
from decodebench.decoding.transforms.registry import PackContext, StatefulStep, Step
from decodebench.decoding.transforms.sortfree import mirostat_v2_kept, xtc_removed
from decodebench.decoding.transforms.sortfree_more import mirostat_v1_kept, tail_free_kept


def _finite_count(logits: Tensor) -> Tensor:
    return torch.isfinite(logits).sum(dim=-1, keepdim=True)


def _sorted_probs(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Descending logits' softmax in float32 (llama.cpp's `softmax_impl` on a sorted array), and the order.

    A stable sort, so tied tokens keep id order (llama.cpp's partial sort leaves ties in no fixed order)."""
    x = logits.to(opmath(logits.dtype))
    vals, idx = torch.sort(x, dim=-1, descending=True, stable=True)
    return vals.softmax(dim=-1), idx


def _drop_sorted(logits: Tensor, idx: Tensor, remove_sorted: Tensor) -> Tensor:
    """`-inf` at the tokens whose sorted position is flagged in `remove_sorted` `[B, V]`."""
    remove = torch.zeros_like(remove_sorted).scatter_(1, idx, remove_sorted)
    return torch.where(remove, NEG_INF, logits)


# ---------------------------------------------------------------------------------------------- top-nσ
def top_n_sigma(logits: Tensor, n) -> Tensor:
    """Top-nσ (Tang et al. 2024): drop logits below `max - n * std` of the row's finite logits.

    `n <= 0` leaves the row unchanged (llama.cpp's no-op since PR 13345), as does a single candidate.
    """
    x = logits.to(opmath(logits.dtype))
    finite = x.abs() < math.inf  # = isfinite, which on a CPU runs a scalar loop 3x slower than abs + lt
    count = finite.sum(dim=-1, keepdim=True)
    cnt = count.clamp(min=1)
    z = torch.where(finite, x, 0.0)
    mean = z.sum(dim=-1, keepdim=True) / cnt
    std = (torch.where(finite, (x - mean) ** 2, 0.0).sum(dim=-1, keepdim=True) / cnt).sqrt()
    top = x.amax(dim=-1, keepdim=True)
    nn = column(n, logits, x.dtype, "top_n_sigma")
    remove = (x < top - nn * std) & (nn > 0) & (count > 1)
    return torch.where(remove, NEG_INF, logits)


# ------------------------------------------------------------------------------------------- tail-free
def tail_free(logits: Tensor, z, min_tokens_to_keep=1, *, candidates: int = DEFAULT_K) -> Tensor:
    """Tail-free sampling (Bricken 2019), as llama.cpp's `tail_free` sampler: sort, take the absolute second
    differences of the probabilities, normalise them, and cut where their running sum first exceeds `z`
    (at a sorted position >= `min_tokens_to_keep`). `z >= 1` or at most two candidates: unchanged.

    Without a sort: the `candidates` best tokens decide each row they provably can (sortfree_more.py:
    nearly every peaked row); the other rows sort (`candidates=0`: always sort; compiled: sorts)."""
    zz = column(z, logits, opmath(logits.dtype), "tfs_z")
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    if not candidates or torch.compiler.is_compiling() or not usable(logits, 2 * candidates):
        return _tail_free_sorted(logits, zz, mtk)  # compiled: see mirostat_v1
    keep, ok = tail_free_kept(logits, zz, mtk, candidates)
    return resolve(torch.where(keep, logits, NEG_INF), ok, lambda i: _tail_free_sorted(logits[i], zz[i], mtk[i]),
                   lambda: _tail_free_sorted(logits, zz, mtk))


def _tail_free_sorted(logits: Tensor, zz: Tensor, mtk: Tensor) -> Tensor:
    probs, idx = _sorted_probs(logits)
    b, v = probs.shape
    n = _finite_count(logits)  # llama.cpp's cur_p->size: the derivatives run over the candidates only
    if v < 3:
        return logits.clone()
    d1 = probs[:, :-1] - probs[:, 1:]
    d2 = (d1[:, :-1] - d1[:, 1:]).abs()  # llama.cpp's float arithmetic order
    pos = torch.arange(v - 2, device=logits.device)
    valid = pos < n - 2
    d2 = torch.where(valid, d2, 0.0)
    total = d2.sum(dim=-1, keepdim=True)
    uniform = torch.where(valid, 1.0 / (n - 2).clamp(min=1).to(d2.dtype), 0.0)
    d2 = torch.where(total > 1e-6, d2 / total, uniform)
    hit = (d2.cumsum(dim=-1) > zz) & (pos >= mtk) & valid
    last = torch.where(hit.any(dim=-1, keepdim=True), hit.int().argmax(dim=-1, keepdim=True), n)
    on = (zz < 1) & (n > 2)
    remove = (torch.arange(v, device=logits.device) >= last) & on
    return _drop_sorted(logits, idx, remove)


# ------------------------------------------------------------------------------------------------- XTC
def xtc(logits: Tensor, probability, threshold, coin: Tensor, min_tokens_to_keep=1, *,
        candidates: int = DEFAULT_K) -> Tensor:
    """Exclude Top Choices: with chance `probability` (the row fires when `coin <= probability`), drop every
    token with probability >= `threshold` except the least likely of them. `threshold > 0.5`, probability 0
    or fewer than two candidates: unchanged. `coin` `[B]` is the row's uniform draw for this step.

    Without a sort: the `candidates` best tokens decide each row they provably can (sortfree.py); the
    other rows sort (`candidates=0`: always sort)."""
    p = column(probability, logits, torch.float32, "xtc_probability")
    t = column(threshold, logits, torch.float32, "xtc_threshold")
    u = column(coin, logits, torch.float32, "coin")
    mtk = column(min_tokens_to_keep, logits, torch.long, "min_tokens_to_keep")
    if not candidates or not usable(logits, 2 * candidates):
        return _xtc_sorted(logits, p, t, u, mtk)
    fires = (p > 0) & (t <= 0.5) & (_finite_count(logits) >= 2) & (u <= p)
    remove, ok = xtc_removed(logits, fires, t, mtk, candidates)
    return resolve(torch.where(remove, NEG_INF, logits), ok, lambda i: _xtc_sorted(logits[i], p[i], t[i], u[i], mtk[i]),
                   lambda: _xtc_sorted(logits, p, t, u, mtk))


def _xtc_sorted(logits: Tensor, p: Tensor, t: Tensor, u: Tensor, mtk: Tensor) -> Tensor:
    probs, idx = _sorted_probs(logits)
    v = probs.shape[-1]
    n = _finite_count(logits)
    fires = (p > 0) & (t <= 0.5) & (n >= 2) & (u <= p)
    above = (probs >= t.to(probs.dtype)).cumprod(dim=-1).sum(dim=-1, keepdim=True)  # the leading run
    pos_last = (above - 1).clamp(min=0)
    fires &= (n - pos_last >= mtk) & (pos_last > 0)
    remove = (torch.arange(v, device=logits.device) < pos_last) & fires
    return _drop_sorted(logits, idx, remove)


# ------------------------------------------------------------------------------------ dynamic temperature
def dynatemp(logits: Tensor, temperature, dynatemp_range, dynatemp_exponent) -> Tensor:
    """Entropy-scaled temperature (llama.cpp's `temp_ext`): `T = lo + (hi - lo) * (H / log n) ** exponent`
    with `lo = max(0, t - range)`, `hi = t + range`, H the entropy over the row's n candidates; T <= 0 keeps
    only the argmax. `range <= 0` is plain temperature `t`; a single candidate is left unchanged."""
    om = opmath(logits.dtype)
    x = logits.to(om)
    t = column(temperature, logits, om, "temperature")
    r = column(dynatemp_range, logits, om, "dynatemp_range")
    e = column(dynatemp_exponent, logits, om, "dynatemp_exponent")
    n = _finite_count(logits).to(om)
    p = x.softmax(dim=-1)
    ent = -torch.where(p > 0, p * p.log(), 0.0).sum(dim=-1, keepdim=True)
    norm = ent / torch.log(n).clamp(min=1e-30)
    lo, hi = (t - r).clamp(min=0), t + r
    dyn = torch.where(r > 0, lo + (hi - lo) * norm.pow(e), t)
    dyn = torch.where((r > 0) & (n <= 1), 1.0, dyn)  # one candidate: llama.cpp returns before scaling
    greedy = dyn <= 0
    out = (x / torch.where(greedy, 1.0, dyn)).to(logits.dtype)
    best = logits.argmax(dim=-1, keepdim=True)
    keep = torch.zeros_like(greedy.expand_as(logits)).scatter_(1, best, True)
    return torch.where(greedy & ~keep, NEG_INF, out)


# ---------------------------------------------------------------------------------------------- mirostat
def mirostat_v2(logits: Tensor, mu, *, candidates: int = DEFAULT_K) -> Tensor:
    """Mirostat 2.0's truncation (Basu et al. 2021): keep the sorted prefix of tokens whose surprise
    `-log2 p` is at most `mu` (at least the top token). Sampling from what is left, then `mirostat_update`,
    completes llama.cpp's `mirostat_v2` sampler.

    Without a sort: the `candidates` best tokens decide each row they provably can (sortfree.py); the
    other rows sort (`candidates=0`: always sort)."""
    if not candidates or not usable(logits, 2 * candidates):
        return _mirostat_v2_sorted(logits, mu)
    m = column(mu, logits, opmath(logits.dtype), "mu")
    keep, ok = mirostat_v2_kept(logits, m, candidates)
    return resolve(torch.where(keep, logits, NEG_INF), ok, lambda i: _mirostat_v2_sorted(logits[i], m[i]),
                   lambda: _mirostat_v2_sorted(logits, m))


def _mirostat_v2_sorted(logits: Tensor, mu) -> Tensor:
    probs, idx = _sorted_probs(logits)
    m = column(mu, logits, probs.dtype, "mu")
    surprise = -torch.log2(probs)
    over = (surprise > m).int().cumsum(dim=-1) > 0  # from the first token over mu on
    over[:, 0] = False
    return _drop_sorted(logits, idx, over)


def mirostat_v1(logits: Tensor, mu, vocab_size: int, m: int = 100, *, candidates: int = DEFAULT_K) -> Tensor:
    """Mirostat 1.0's truncation: estimate the Zipf exponent `s` from the top `m` probabilities, derive
    `k = (eps * 2**mu / (1 - N**-eps)) ** (1 / s)` with `eps = s - 1`, keep the top `max(int(k), 1)`.

    Without a sort: the best `max(candidates, m)` tokens decide each row they provably can
    (sortfree_more.py: nearly every row); the other rows sort (`candidates=0`: always sort; compiled:
    sorts)."""
    k = max(candidates, m) if candidates else 0
    # compiled, the step sorts: inductor (torch 2.13, CPU) miscompiled typical's sort-and-scatter when
    # this path's and tail-free's `torch.cond` fallbacks followed it in one graph (the kept values landed
    # at other tokens; aot_eager was right). tests/decoding/test_sortfree_more.py checks the compiled step.
    if not k or torch.compiler.is_compiling() or not usable(logits, 2 * k):
        return _mirostat_v1_sorted(logits, mu, vocab_size, m)
    mu_col = column(mu, logits, opmath(logits.dtype), "mu")
    keep, ok = mirostat_v1_kept(logits, mu_col, vocab_size, m, k)
    return resolve(torch.where(keep, logits, NEG_INF), ok,
                   lambda i: _mirostat_v1_sorted(logits[i], mu_col[i], vocab_size, m),
                   lambda: _mirostat_v1_sorted(logits, mu_col, vocab_size, m))


def _mirostat_v1_sorted(logits: Tensor, mu, vocab_size: int, m: int) -> Tensor:
    probs, idx = _sorted_probs(logits)
    v = probs.shape[-1]
    n = _finite_count(logits)
    j = min(m - 1, v - 1)
    i = torch.arange(j, device=logits.device, dtype=probs.dtype)
    ti = torch.log((i + 2) / (i + 1))
    use = torch.arange(j, device=logits.device) < n - 1  # llama.cpp: i < m - 1 and i < size - 1
    bi = torch.log(probs[:, :j] / probs[:, 1 : j + 1])
    s_hat = (torch.where(use, ti * bi, 0.0).sum(-1, keepdim=True) / torch.where(use, ti * ti, 0.0).sum(-1, keepdim=True))
    eps = s_hat - 1
    mu_col = column(mu, logits, probs.dtype, "mu")
    k = ((eps * torch.pow(2.0, mu_col)) / (1 - torch.pow(float(vocab_size), -eps))).pow(1 / s_hat)
    # C's int(k) truncates; NaN or huge k (a flat row) keeps every candidate, as the later top-k would
    k = torch.where(torch.isfinite(k), k, float(v)).clamp(min=1, max=v).floor().long()
    remove = torch.arange(v, device=logits.device) >= k
    return _drop_sorted(logits, idx, remove)


def mirostat_update(mu: Tensor, processed: Tensor, tokens: Tensor, tau, eta) -> Tensor:
    """`mu - eta * (-log2 p(token) - tau)` with p from the distribution the token was sampled from."""
    logp = torch.log_softmax(processed.to(torch.float32), dim=-1).gather(1, tokens.view(-1, 1).long())[:, 0]
    surprise = -logp / math.log(2)
    return mu - torch.as_tensor(eta, dtype=mu.dtype, device=mu.device) * (surprise - torch.as_tensor(tau, dtype=mu.dtype, device=mu.device))


# ---------------------------------------------------------------------------------------------- binders
XTC_STREAM = 1  # the coin's noise stream (0 would be the token noise's own)


@builtin("top_n_sigma", top_n_sigma)
def _top_n_sigma(ctx: PackContext, on: list[bool]) -> Step:
    n = float_column(ctx, on, "top_n_sigma", 0.0)
    return on_rows_only(ctx, on, lambda x, i: top_n_sigma(x, rows_of(n, i)))


@builtin("tfs_z", tail_free)
def _tfs(ctx: PackContext, on: list[bool]) -> Step:
    z, mtk = float_column(ctx, on, "tfs_z", 1.0), min_keep(ctx)
    return on_rows_only(ctx, on, lambda x, i: tail_free(x, rows_of(z, i), rows_of(mtk, i)))


@builtin("xtc", xtc)
def _xtc(ctx: PackContext, on: list[bool]) -> Step:
    p, t, mtk = float_column(ctx, on, "xtc_probability", 0.0), float_column(ctx, on, "xtc_threshold", 1.0), min_keep(ctx)

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        if s.keys is None:
            raise ValueError("xtc_probability needs the rows' noise keys: pass DecodeState(keys=row_keys(...))")
        # the row's own step (rows of a running batch may have started at different steps)
        return xtc(x, p, t, row_uniform(s.keys.to(x.device), s.generated(), XTC_STREAM), mtk)

    return step


def _temperature_or_one(r) -> float:
    return 1.0 if r.temperature is None else r.temperature


@builtin("dynatemp", dynatemp)
def _dynatemp(ctx: PackContext, on: list[bool]) -> Step:
    t = ctx.floats([_temperature_or_one(r) if o else 1.0 for r, o in zip(ctx.rows, on)])
    r, e = float_column(ctx, on, "dynatemp_range", 0.0), float_column(ctx, on, "dynatemp_exponent", 1.0)
    return on_rows_only(ctx, on, lambda x, i: dynatemp(x, rows_of(t, i), rows_of(r, i), rows_of(e, i)))


class MirostatStep(StatefulStep):
    """Per-row `mu` (starting at `2 * tau`), truncation by version (1 or 2), and the update from the token
    drawn. The distribution the token came from is this step's output: keep mirostat last in the order."""

    def __init__(self, ctx: PackContext, on: list[bool]) -> None:
        self.version = [r.mirostat if o else 0 for r, o in zip(ctx.rows, on)]
        self.tau = float_column(ctx, on, "mirostat_tau", 0.0).float()
        self.eta = float_column(ctx, on, "mirostat_eta", 0.0).float()
        self.on = torch.tensor([v != 0 for v in self.version], device=ctx.device)
        self.mu = 2 * self.tau
        self.vocab_size = ctx.vocab_size
        self._out: Tensor | None = None

    def __call__(self, logits: Tensor, tables) -> Tensor:
        out = logits
        for v, fn in ((1, lambda x, i: mirostat_v1(x, rows_of(self.mu, i), self.vocab_size)),
                      (2, lambda x, i: mirostat_v2(x, rows_of(self.mu, i)))):
            rows = [i for i, ver in enumerate(self.version) if ver == v]
            if rows:
                idx = torch.tensor(rows, device=logits.device)
                out = out.index_copy(0, idx, fn(out.index_select(0, idx), idx))
        self._out = out
        return out

    def update(self, tokens: Tensor) -> None:
        if self._out is None:
            return
        new = mirostat_update(self.mu, self._out, tokens.to(self._out.device), self.tau, self.eta)
        self.mu = torch.where(self.on, new, self.mu)
        self._out = None

    def adopt(self, old: "MirostatStep", index: list[int | None]) -> None:
        kept = [j for j, i in enumerate(index) if i is not None]
        if kept:
            src = torch.tensor([index[j] for j in kept], device=old.mu.device)
            self.mu = self.mu.clone()
            self.mu[torch.tensor(kept, device=self.mu.device)] = old.mu[src].to(self.mu.device)


@builtin("mirostat", mirostat_v2)
def _mirostat(ctx: PackContext, on: list[bool]) -> Step:
    return MirostatStep(ctx, on)
