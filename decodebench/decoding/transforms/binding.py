"""The built-in transforms' registry entries: when a row asks for each, and how a batch is packed.

Each binder runs once per batch (in `LogitsChain.from_rows`): it turns the rows' Python values into
`[B]` tensors holding the neutral value for rows that leave the transform off, works out the static
hints (`k_max`, `keep_max`, n-gram sizes) so the step never reads a tensor back, and returns the step
`(logits, tables) -> logits`. Sort-based warpers (top_p, typical_p) run on the rows that asked only.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from decodebench.decoding.transforms import penalties as P
from decodebench.decoding.transforms import filters as W
from decodebench.decoding.params.table import asks_for, transform_params
from decodebench.decoding.transforms.registry import TRANSFORMS, PackContext, Step, TransformSpec


def builtin(name: str, fn: Callable, unless: Callable[[object], bool] | None = None):
    """Register a built-in transform's binder; its parameters, switch and warper flag come from the table.
    `unless(row)`: another transform takes the row over (dynatemp rows skip plain temperature)."""
    table = transform_params(name)
    params, warper, asks = tuple(p.name for p in table), table[0].warper, asks_for(name)

    def is_on(row) -> bool:
        return asks(row) and (row.do_sample or not warper) and not (unless is not None and unless(row))

    def register(bind):
        TRANSFORMS.register(name, TransformSpec(name, fn, params, is_on, bind, warper))
        return bind

    return register


def _pick(ctx: PackContext, on: list[bool], field: str, off):
    return [getattr(r, field) if o else off for r, o in zip(ctx.rows, on)]


def _mtk(ctx: PackContext) -> Tensor:
    return ctx.longs([r.min_tokens_to_keep for r in ctx.rows])


def _keep_max(ctx: PackContext, on: list[bool]) -> int:
    return max(r.min_tokens_to_keep for r, o in zip(ctx.rows, on) if o)


def _on_rows_only(ctx: PackContext, on: list[bool], run: Callable[[Tensor, Tensor], Tensor]) -> Step:
    """Run `run(logits_subset, row_index)` on the rows that asked, copying the others through."""
    if all(on):
        return lambda x, tables: run(x, None)
    idx = ctx.longs([i for i, o in enumerate(on) if o])

    def step(x: Tensor, tables) -> Tensor:
        return x.index_copy(0, idx, run(x.index_select(0, idx), idx))

    return step


def _sub(col: Tensor, idx: Tensor | None) -> Tensor:
    return col if idx is None else col.index_select(0, idx)


# -------------------------------------------------------------------------------------------- warpers
@builtin("temperature", W.temperature, unless=asks_for("dynatemp"))
def _temperature(ctx: PackContext, on: list[bool]) -> Step:
    t = ctx.floats(_pick(ctx, on, "temperature", 1.0))
    any_zero = any(o and r.temperature == 0 for r, o in zip(ctx.rows, on))
    return lambda x, tables: W.temperature(x, t, any_zero=any_zero)


def top_k_bounds(ctx: PackContext, on: list[bool]) -> list[int | None]:
    """Per row: the effective k (`max(top_k, min_tokens_to_keep)`) when it cuts the vocab, else None."""
    v = ctx.vocab_size
    return [max(r.top_k, r.min_tokens_to_keep) if o and max(r.top_k, r.min_tokens_to_keep) < v else None
            for r, o in zip(ctx.rows, on)]


@builtin("top_k", W.top_k)
def _top_k(ctx: PackContext, on: list[bool]) -> Step:
    k, mtk = ctx.longs(_pick(ctx, on, "top_k", 0)), _mtk(ctx)
    k_max = max([b for b in top_k_bounds(ctx, on) if b is not None], default=0)
    return lambda x, tables: W.top_k(x, k, mtk, k_max=k_max)


@builtin("top_p", W.top_p)
def _top_p(ctx: PackContext, on: list[bool]) -> Step:
    p, mtk, support = ctx.floats(_pick(ctx, on, "top_p", math.inf)), _mtk(ctx), ctx.support
    return _on_rows_only(ctx, on, lambda x, i: W.top_p(x, _sub(p, i), _sub(mtk, i), support=support))


def bind_top_k_top_p(ctx: PackContext, on_k: list[bool], on_p: list[bool]) -> Step:
    """top_k directly followed by top_p: one fused step (`top_k_top_p`), bit-equal to the two."""
    k, mtk = ctx.longs(_pick(ctx, on_k, "top_k", 0)), _mtk(ctx)
    p = ctx.floats(_pick(ctx, on_p, "top_p", math.inf))
    k_max = max([b for b in top_k_bounds(ctx, on_k) if b is not None], default=0)
    support = ctx.support
    return lambda x, tables: W.top_k_top_p(x, k, p, mtk, k_max=k_max, support=support)


@builtin("min_p", W.min_p)
def _min_p(ctx: PackContext, on: list[bool]) -> Step:
    m, mtk = ctx.floats(_pick(ctx, on, "min_p", 0.0)), _mtk(ctx)
    sizes = sorted({r.min_tokens_to_keep for r, o in zip(ctx.rows, on) if o})
    return lambda x, tables: W.min_p(x, m, mtk, keep_sizes=sizes)


@builtin("typical_p", W.typical)
def _typical(ctx: PackContext, on: list[bool]) -> Step:
    mass, mtk = ctx.floats(_pick(ctx, on, "typical_p", math.inf)), _mtk(ctx)
    return _on_rows_only(ctx, on, lambda x, i: W.typical(x, _sub(mass, i), _sub(mtk, i)))


@builtin("epsilon_cutoff", W.epsilon)
def _epsilon(ctx: PackContext, on: list[bool]) -> Step:
    e, mtk, keep = ctx.floats(_pick(ctx, on, "epsilon_cutoff", 0.0)), _mtk(ctx), _keep_max(ctx, on)
    return lambda x, tables: W.epsilon(x, e, mtk, keep_max=keep)


@builtin("eta_cutoff", W.eta)
def _eta(ctx: PackContext, on: list[bool]) -> Step:
    e, mtk, keep = ctx.floats(_pick(ctx, on, "eta_cutoff", 0.0)), _mtk(ctx), _keep_max(ctx, on)
    return lambda x, tables: W.eta(x, e, mtk, keep_max=keep)


# ---------------------------------------------------------------------------------------- processors
@builtin("repetition_penalty", P.repetition_penalty)
def _repetition(ctx: PackContext, on: list[bool]) -> Step:
    pen = ctx.floats(_pick(ctx, on, "repetition_penalty", 1.0))
    prompt = [o and r.penalize_prompt for r, o in zip(ctx.rows, on)]
    prompt_rows = torch.tensor(prompt, device=ctx.device)[:, None] if any(prompt) else None
    return lambda x, tables: P.repetition_penalty(x, pen, tables.history(prompt_rows))


@builtin("frequency_penalty", P.frequency_penalty)
def _frequency(ctx: PackContext, on: list[bool]) -> Step:
    f = ctx.floats(_pick(ctx, on, "frequency_penalty", 0.0))
    return lambda x, tables: P.frequency_penalty(x, f, tables.counts())


@builtin("presence_penalty", P.presence_penalty)
def _presence(ctx: PackContext, on: list[bool]) -> Step:
    f = ctx.floats(_pick(ctx, on, "presence_penalty", 0.0))
    return lambda x, tables: P.presence_penalty(x, f, tables.counts())


@builtin("no_repeat_ngram_size", P.no_repeat_ngram)
def _ngram(ctx: PackContext, on: list[bool]) -> Step:
    vals = _pick(ctx, on, "no_repeat_ngram_size", 0)
    n, sizes = ctx.longs(vals), sorted({v for v in vals if v})

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return P.no_repeat_ngram(x, s.input_ids, n, s.attention_mask, sizes=sizes)

    return step


@builtin("min_new_tokens", P.min_new_tokens)
def _min_new(ctx: PackContext, on: list[bool]) -> Step:
    if not ctx.eos_ids:
        raise ValueError("min_new_tokens needs eos_token_id (the token it holds back)")
    n, eos = ctx.longs(_pick(ctx, on, "min_new_tokens", 0)), ctx.longs(list(ctx.eos_ids))
    return lambda x, tables: P.min_new_tokens(x, n, tables.state.generated(), eos)


def _pad_rows(ctx: PackContext, rows: list[list], fill) -> list[list]:
    width = max(1, max(len(r) for r in rows))
    return [r + [fill] * (width - len(r)) for r in rows]


@builtin("logit_bias", P.logit_bias)
def _bias(ctx: PackContext, on: list[bool]) -> Step:
    pairs = [list(r.logit_bias) if o else [] for r, o in zip(ctx.rows, on)]
    _check_ids(ctx, "logit_bias", [t for row in pairs for t, _ in row])
    ids = ctx.longs(_pad_rows(ctx, [[t for t, _ in row] for row in pairs], -1))
    # float32, as HF's SequenceBiasLogitsProcessor stores biases whatever the logits dtype
    vals = torch.tensor(_pad_rows(ctx, [[b for _, b in row] for row in pairs], 0.0), device=ctx.device)
    return lambda x, tables: P.add_sparse(x, ids, vals)


@builtin("bad_words_ids", P.ban_tokens)
def _bans(ctx: PackContext, on: list[bool]) -> Step:
    # HF's NoBadWordsLogitsProcessor drops single-token bans on EOS; so do we. Multi-token bans are a
    # sequence bias of -inf on their last token (HF's own construction), which needs the history.
    rows = [r.bad_words_ids if o else () for r, o in zip(ctx.rows, on)]
    bans = [[t for t in row if isinstance(t, int) and t not in ctx.eos_ids] for row in rows]
    seqs = [[(t, -math.inf) for t in row if not isinstance(t, int)] for row in rows]
    _check_ids(ctx, "bad_words_ids", [t for row in bans for t in row])
    ids = ctx.longs(_pad_rows(ctx, bans, -1))
    vals = torch.where(ids >= 0, -math.inf, 0.0).to(torch.float32)
    if not any(seqs):
        return lambda x, tables: P.add_sparse(x, ids, vals)
    from decodebench.decoding.transforms.sampler_binders import pack_sequences  # late: that module imports this one
    from decodebench.decoding.transforms.top_h import sequence_bias

    singles, multi = pack_sequences(ctx, "bad_words_ids", seqs)

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return sequence_bias(P.add_sparse(x, ids, vals), s.input_ids, s.attention_mask, singles, multi)

    return step


def _check_ids(ctx: PackContext, name: str, ids: list[int]) -> None:
    bad = sorted({t for t in ids if t >= ctx.vocab_size})
    if bad:
        raise ValueError(f"{name} names token ids {bad} outside the vocabulary (size {ctx.vocab_size})")
