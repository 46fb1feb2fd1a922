"""Registry entries of the newer samplers: top-H, top-nσ, tail-free, XTC, dynatemp, quadratic smoothing,
mirostat, DRY, multi-token sequence bias, prefix constraints, grammars and watermarks.

As in bindings.py, each binder packs the rows' values once into `[B]` tensors (neutral values for rows that
leave the transform off) and returns the step. Mirostat and grammars keep per-row state across steps: their
steps are `StatefulStep`s, advanced by `LogitsChain.update` and carried by `LogitsChain.select`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms import adaptive_p as AP
from decodebench.decoding.transforms import dry as D
from decodebench.decoding.transforms import llamacpp as L
from decodebench.decoding.transforms import top_h as M
from decodebench.decoding.transforms.binding import _check_ids, _mtk, _on_rows_only, _pick, _sub, builtin
from decodebench.decoding.transforms.constraints import PREFIX_FNS, prefix_allowed
from decodebench.decoding.transforms.grammar import GrammarStep, apply_bitmask
from decodebench.decoding.transforms.min_k import min_k
from decodebench.decoding.transforms.p_less import p_less, p_less_norm
from decodebench.decoding.sampling import row_uniform
from decodebench.decoding.transforms.registry import PackContext, StatefulStep, Step
from decodebench.decoding.transforms.watermark import WatermarkKey, watermark

XTC_STREAM = 1  # the coin's noise stream (0 would be the token noise's own)


def _col(ctx: PackContext, on: list[bool], field: str, off) -> Tensor:
    return ctx.floats([off if not o or getattr(r, field) is None else getattr(r, field) for r, o in zip(ctx.rows, on)])


# -------------------------------------------------------------------------------------------- warpers
@builtin("top_h", M.top_h)
def _top_h(ctx: PackContext, on: list[bool]) -> Step:
    h = _col(ctx, on, "top_h", 1.0)
    return _on_rows_only(ctx, on, lambda x, i: M.top_h(x, _sub(h, i)))


@builtin("top_n_sigma", L.top_n_sigma)
def _top_n_sigma(ctx: PackContext, on: list[bool]) -> Step:
    n = _col(ctx, on, "top_n_sigma", 0.0)
    return lambda x, tables: L.top_n_sigma(x, n)


@builtin("tfs_z", L.tail_free)
def _tfs(ctx: PackContext, on: list[bool]) -> Step:
    z, mtk = _col(ctx, on, "tfs_z", 1.0), _mtk(ctx)
    return _on_rows_only(ctx, on, lambda x, i: L.tail_free(x, _sub(z, i), _sub(mtk, i)))


@builtin("xtc", L.xtc)
def _xtc(ctx: PackContext, on: list[bool]) -> Step:
    p, t, mtk = _col(ctx, on, "xtc_probability", 0.0), _col(ctx, on, "xtc_threshold", 1.0), _mtk(ctx)

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        if s.keys is None:
            raise ValueError("xtc_probability needs the rows' noise keys: pass DecodeState(keys=row_keys(...))")
        # the row's own step (rows of a running batch may have started at different steps)
        return L.xtc(x, p, t, row_uniform(s.keys.to(x.device), s.generated(), XTC_STREAM), mtk)

    return step


def _temperature_or_one(r) -> float:
    return 1.0 if r.temperature is None else r.temperature


@builtin("dynatemp", L.dynatemp)
def _dynatemp(ctx: PackContext, on: list[bool]) -> Step:
    t = ctx.floats([_temperature_or_one(r) if o else 1.0 for r, o in zip(ctx.rows, on)])
    r, e = _col(ctx, on, "dynatemp_range", 0.0), _col(ctx, on, "dynatemp_exponent", 1.0)
    return _on_rows_only(ctx, on, lambda x, i: L.dynatemp(x, _sub(t, i), _sub(r, i), _sub(e, i)))


@builtin("smoothing_factor", M.smoothing)
def _smoothing(ctx: PackContext, on: list[bool]) -> Step:
    f, c = _col(ctx, on, "smoothing_factor", 0.0), _col(ctx, on, "smoothing_curve", 1.0)
    return lambda x, tables: M.smoothing(x, f, c)


class MirostatStep(StatefulStep):
    """Per-row `mu` (starting at `2 * tau`), truncation by version (1 or 2), and the update from the token
    drawn. The distribution the token came from is this step's output: keep mirostat last in the order."""

    def __init__(self, ctx: PackContext, on: list[bool]) -> None:
        self.version = [r.mirostat if o else 0 for r, o in zip(ctx.rows, on)]
        self.tau = _col(ctx, on, "mirostat_tau", 0.0).float()
        self.eta = _col(ctx, on, "mirostat_eta", 0.0).float()
        self.on = torch.tensor([v != 0 for v in self.version], device=ctx.device)
        self.mu = 2 * self.tau
        self.vocab_size = ctx.vocab_size
        self._out: Tensor | None = None

    def __call__(self, logits: Tensor, tables) -> Tensor:
        out = logits
        for v, fn in ((1, lambda x, i: L.mirostat_v1(x, _sub(self.mu, i), self.vocab_size)),
                      (2, lambda x, i: L.mirostat_v2(x, _sub(self.mu, i)))):
            rows = [i for i, ver in enumerate(self.version) if ver == v]
            if rows:
                idx = torch.tensor(rows, device=logits.device)
                out = out.index_copy(0, idx, fn(out.index_select(0, idx), idx))
        self._out = out
        return out

    def update(self, tokens: Tensor) -> None:
        if self._out is None:
            return
        new = L.mirostat_update(self.mu, self._out, tokens.to(self._out.device), self.tau, self.eta)
        self.mu = torch.where(self.on, new, self.mu)
        self._out = None

    def adopt(self, old: "MirostatStep", index: list[int | None]) -> None:
        kept = [j for j, i in enumerate(index) if i is not None]
        if kept:
            src = torch.tensor([index[j] for j in kept], device=old.mu.device)
            self.mu = self.mu.clone()
            self.mu[torch.tensor(kept, device=self.mu.device)] = old.mu[src].to(self.mu.device)


@builtin("mirostat", L.mirostat_v2)
def _mirostat(ctx: PackContext, on: list[bool]) -> Step:
    return MirostatStep(ctx, on)


# p-less, min-k, adaptive-P: per-row switches and settings packed here, once; the steps build no host tensors
def _on_col(ctx: PackContext, on: list[bool]) -> Tensor:
    return torch.tensor(on, dtype=torch.bool, device=ctx.device)


@builtin("p_less", p_less)
def _p_less(ctx: PackContext, on: list[bool]) -> Step:
    rows = _on_col(ctx, on)
    return lambda x, tables: p_less(x, rows)


@builtin("p_less_norm", p_less_norm)
def _p_less_norm(ctx: PackContext, on: list[bool]) -> Step:
    rows = _on_col(ctx, on)
    return lambda x, tables: p_less_norm(x, rows)


@builtin("min_k", min_k)
def _min_k(ctx: PackContext, on: list[bool]) -> Step:
    tau, rows = _col(ctx, on, "min_k_tau", 0.0).float(), _on_col(ctx, on)
    return lambda x, tables: min_k(x, tau, rows)


@builtin("adaptive_p", AP.adaptive_p)
def _adaptive_p(ctx: PackContext, on: list[bool]) -> Step:
    return AP.AdaptivePStep(ctx, on)


# ----------------------------------------------------------------------------------------- processors
def breaker_sequences(tokenizer, text: str, max_tail: int = 20) -> list[tuple[int, ...]]:
    """llama.cpp's reading of a text breaker: every token whose text contains it (no tail), and every token
    whose text ends with a prefix of it, followed by the tokenization of the rest (at most `max_tail`)."""
    out: list[tuple[int, ...]] = []
    for tok in range(len(tokenizer)):
        word = tokenizer.decode([tok])
        if text in word:
            out.append((tok,))
            continue
        for pos in range(len(word)):
            tail = word[pos:]
            if text.startswith(tail):
                rest = tokenizer.encode(text[len(tail):], add_special_tokens=False)[:max_tail]
                seq = (tok, *rest)
                if seq not in out:
                    out.append(seq)
    return out


_BREAKER_CACHE: dict[tuple[int, str], list[tuple[int, ...]]] = {}


def _breakers(ctx: PackContext, breakers) -> list[tuple[int, ...]]:
    seqs: list[tuple[int, ...]] = []
    for b in breakers:
        if isinstance(b, str):
            if ctx.tokenizer is None:
                raise ValueError("dry_sequence_breakers given as text need the tokenizer "
                                 "(LogitsChain.from_rows(tokenizer=...)); give token-id lists instead")
            key = (id(ctx.tokenizer), b)
            if key not in _BREAKER_CACHE:
                _BREAKER_CACHE[key] = breaker_sequences(ctx.tokenizer, b)
            seqs.extend(_BREAKER_CACHE[key])
        else:
            seqs.append(tuple(b))
    return seqs


@builtin("dry", D.dry)
def _dry(ctx: PackContext, on: list[bool]) -> Step:
    mult, base = _col(ctx, on, "dry_multiplier", 0.0), _col(ctx, on, "dry_base", 1.75)
    allowed = ctx.longs(_pick(ctx, on, "dry_allowed_length", 0))
    last_n = ctx.longs(_pick(ctx, on, "dry_penalty_last_n", 0))
    b, v = len(ctx.rows), ctx.vocab_size
    single = torch.zeros(b, v + 1, dtype=torch.bool, device=ctx.device)
    multi: dict[tuple[int, ...], list[bool]] = {}
    for i, (r, o) in enumerate(zip(ctx.rows, on)):
        for seq in _breakers(ctx, r.dry_sequence_breakers or ()) if o else ():
            if len(seq) == 1:
                single[i, min(seq[0], v)] = True
            else:
                multi.setdefault(seq, [False] * b)[i] = True
    multi_t = [(torch.tensor(s, device=ctx.device), torch.tensor(rows, device=ctx.device)) for s, rows in multi.items()]

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return D.dry(x, s.input_ids, s.attention_mask, mult, base, allowed, last_n,
                     single_breakers=single, multi_breakers=multi_t)

    return step


def pack_sequences(ctx: PackContext, name: str, per_row: list[list[tuple[tuple[int, ...], float]]]):
    """Per-row `(sequence, bias)` lists -> `sequence_bias`'s `singles [B, V]` and `multi` groups."""
    b, v = len(ctx.rows), ctx.vocab_size
    _check_ids(ctx, name, [t for row in per_row for seq, _ in row for t in seq])
    singles = torch.zeros(b, v, dtype=torch.float32, device=ctx.device)
    groups: dict[int, list[list[tuple[tuple[int, ...], float]]]] = {}
    for i, row in enumerate(per_row):
        for seq, val in row:
            if len(seq) == 1:
                singles[i, seq[0]] += val
            else:
                groups.setdefault(len(seq) - 1, [[] for _ in range(b)])[i].append((seq, val))
    multi = []
    for n, rows in sorted(groups.items()):
        g = max(len(r) for r in rows)
        pre = [[list(s[:-1]) for s, _ in r] + [[-1] * n] * (g - len(r)) for r in rows]  # -1 never matches
        last = [[s[-1] for s, _ in r] + [0] * (g - len(r)) for r in rows]
        vals = [[val for _, val in r] + [0.0] * (g - len(r)) for r in rows]
        multi.append((ctx.longs(pre), ctx.longs(last), torch.tensor(vals, dtype=torch.float32, device=ctx.device)))
    return singles, multi


@builtin("sequence_bias", M.sequence_bias)
def _sequence_bias(ctx: PackContext, on: list[bool]) -> Step:
    singles, multi = pack_sequences(ctx, "sequence_bias", [list(r.sequence_bias) if o else [] for r, o in zip(ctx.rows, on)])

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return M.sequence_bias(x, s.input_ids, s.attention_mask, singles, multi)

    return step


@builtin("prefix_allowed_tokens_fn", prefix_allowed)
def _prefix(ctx: PackContext, on: list[bool]) -> Step:
    fns = [PREFIX_FNS.get(r.prefix_allowed_tokens_fn) if o else None for r, o in zip(ctx.rows, on)]
    return lambda x, tables: prefix_allowed(x, tables.state.input_ids, fns)


@builtin("watermark", watermark)
def _watermark(ctx: PackContext, on: list[bool]) -> Step:
    keys = [WatermarkKey(ctx.vocab_size, r.watermark_gamma, r.watermark_hashing_key, r.watermark_seeding_scheme,
                         r.watermark_context_width) if o else None for r, o in zip(ctx.rows, on)]
    deltas = [r.watermark_delta if o else 0.0 for r, o in zip(ctx.rows, on)]
    return lambda x, tables: watermark(x, tables.state.input_ids, keys, deltas)


@builtin("grammar", apply_bitmask)
def _grammar(ctx: PackContext, on: list[bool]) -> Step:
    return GrammarStep(ctx, on)
