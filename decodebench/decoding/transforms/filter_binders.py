"""The binders of the filters (filters.py: temperature, top-k, top-p, min-p, typical, epsilon, eta) and of the
penalties, bans and biases (penalties.py): when a row asks for each, and how a batch is packed (binding.py).
Sort-based warpers (top_p, typical_p) run on the rows that asked only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decodebench.decoding.params.table import asks_for
import decodebench.decoding.transforms.filters as filters
import decodebench.decoding.transforms.penalties as penalties
from decodebench.decoding.transforms.binding import (builtin, check_ids, keep_max, min_keep, on_rows_only, pad_rows,
                                                     rows_of, top_k_bounds, values)
from decodebench.decoding.transforms.registry import PackContext, Step
from decodebench.decoding.transforms.sequence_bias import pack_sequences, sequence_bias


# -------------------------------------------------------------------------------------------- warpers
@builtin("temperature", filters.temperature, unless=asks_for("dynatemp"))
def _temperature(ctx: PackContext, on: list[bool]) -> Step:
    t = ctx.floats(values(ctx, on, "temperature", 1.0))
    any_zero = any(o and r.temperature == 0 for r, o in zip(ctx.rows, on))
    return lambda x, tables: filters.temperature(x, t, any_zero=any_zero)


@builtin("top_k", filters.top_k)
def _top_k(ctx: PackContext, on: list[bool]) -> Step:
    k, mtk = ctx.longs(values(ctx, on, "top_k", 0)), min_keep(ctx)
    k_max = max([b for b in top_k_bounds(ctx, on) if b is not None], default=0)
    return on_rows_only(ctx, on, lambda x, i: filters.top_k(x, rows_of(k, i), rows_of(mtk, i), k_max=k_max))


@builtin("top_p", filters.top_p)
def _top_p(ctx: PackContext, on: list[bool]) -> Step:
    p, mtk, support = ctx.floats(values(ctx, on, "top_p", math.inf)), min_keep(ctx), ctx.support
    return on_rows_only(ctx, on, lambda x, i: filters.top_p(x, rows_of(p, i), rows_of(mtk, i), support=support))


@builtin("min_p", filters.min_p)
def _min_p(ctx: PackContext, on: list[bool]) -> Step:
    m, mtk = ctx.floats(values(ctx, on, "min_p", 0.0)), min_keep(ctx)
    sizes = sorted({r.min_tokens_to_keep for r, o in zip(ctx.rows, on) if o})
    return on_rows_only(ctx, on, lambda x, i: filters.min_p(x, rows_of(m, i), rows_of(mtk, i), keep_sizes=sizes))


@builtin("typical_p", filters.typical)
def _typical(ctx: PackContext, on: list[bool]) -> Step:
    mass, mtk = ctx.floats(values(ctx, on, "typical_p", math.inf)), min_keep(ctx)
    return on_rows_only(ctx, on, lambda x, i: filters.typical(x, rows_of(mass, i), rows_of(mtk, i)))


@builtin("epsilon_cutoff", filters.epsilon)
def _epsilon(ctx: PackContext, on: list[bool]) -> Step:
    e, mtk, keep = ctx.floats(values(ctx, on, "epsilon_cutoff", 0.0)), min_keep(ctx), keep_max(ctx, on)
    return on_rows_only(ctx, on, lambda x, i: filters.epsilon(x, rows_of(e, i), rows_of(mtk, i), keep_max=keep))


@builtin("eta_cutoff", filters.eta)
def _eta(ctx: PackContext, on: list[bool]) -> Step:
    e, mtk, keep = ctx.floats(values(ctx, on, "eta_cutoff", 0.0)), min_keep(ctx), keep_max(ctx, on)
    return on_rows_only(ctx, on, lambda x, i: filters.eta(x, rows_of(e, i), rows_of(mtk, i), keep_max=keep))


# ---------------------------------------------------------------------------------------- processors
@builtin("repetition_penalty", penalties.repetition_penalty)
def _repetition(ctx: PackContext, on: list[bool]) -> Step:
    pen = ctx.floats(values(ctx, on, "repetition_penalty", 1.0))
    prompt = [o and r.penalize_prompt for r, o in zip(ctx.rows, on)]
    prompt_rows = torch.tensor(prompt, device=ctx.device)[:, None] if any(prompt) else None
    return lambda x, tables: penalties.repetition_penalty(x, pen, tables.history(prompt_rows))


@builtin("frequency_penalty", penalties.frequency_penalty)
def _frequency(ctx: PackContext, on: list[bool]) -> Step:
    f = ctx.floats(values(ctx, on, "frequency_penalty", 0.0))
    return lambda x, tables: penalties.frequency_penalty(x, f, tables.counts())


@builtin("presence_penalty", penalties.presence_penalty)
def _presence(ctx: PackContext, on: list[bool]) -> Step:
    f = ctx.floats(values(ctx, on, "presence_penalty", 0.0))
    return lambda x, tables: penalties.presence_penalty(x, f, tables.counts())


@builtin("no_repeat_ngram_size", penalties.no_repeat_ngram)
def _ngram(ctx: PackContext, on: list[bool]) -> Step:
    vals = values(ctx, on, "no_repeat_ngram_size", 0)
    n, sizes = ctx.longs(vals), sorted({v for v in vals if v})

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return penalties.no_repeat_ngram(x, s.input_ids, n, s.attention_mask, sizes=sizes)

    return step


@builtin("min_new_tokens", penalties.min_new_tokens)
def _min_new(ctx: PackContext, on: list[bool]) -> Step:
    if not ctx.eos_ids:
        raise ValueError("min_new_tokens needs eos_token_id (the token it holds back)")
    n, eos = ctx.longs(values(ctx, on, "min_new_tokens", 0)), ctx.longs(list(ctx.eos_ids))
    return lambda x, tables: penalties.min_new_tokens(x, n, tables.state.generated(), eos)


@builtin("logit_bias", penalties.logit_bias)
def _bias(ctx: PackContext, on: list[bool]) -> Step:
    pairs = [list(r.logit_bias) if o else [] for r, o in zip(ctx.rows, on)]
    check_ids(ctx, "logit_bias", [t for row in pairs for t, _ in row])
    ids = ctx.longs(pad_rows(ctx, [[t for t, _ in row] for row in pairs], -1))
    # float32, as HF's SequenceBiasLogitsProcessor stores biases whatever the logits dtype
    vals = torch.tensor(pad_rows(ctx, [[b for _, b in row] for row in pairs], 0.0), device=ctx.device)
    return lambda x, tables: penalties.add_sparse(x, ids, vals)


@builtin("bad_words_ids", penalties.ban_tokens)
def _bans(ctx: PackContext, on: list[bool]) -> Step:
    # HF's NoBadWordsLogitsProcessor drops single-token bans on EOS; so do we. Multi-token bans are a
    # sequence bias of -inf on their last token (HF's own construction), which needs the history.
    rows = [r.bad_words_ids if o else () for r, o in zip(ctx.rows, on)]
    bans = [[t for t in row if isinstance(t, int) and t not in ctx.eos_ids] for row in rows]
    seqs = [[(t, -math.inf) for t in row if not isinstance(t, int)] for row in rows]
    check_ids(ctx, "bad_words_ids", [t for row in bans for t in row])
    ids = ctx.longs(pad_rows(ctx, bans, -1))
    vals = torch.where(ids >= 0, -math.inf, 0.0).to(torch.float32)
    if not any(seqs):
        return lambda x, tables: penalties.add_sparse(x, ids, vals)
    singles, multi = pack_sequences(ctx, "bad_words_ids", seqs)

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return sequence_bias(penalties.add_sparse(x, ids, vals), s.input_ids, s.attention_mask, singles, multi)

    return step
