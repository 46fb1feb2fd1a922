"""How a built-in transform is packed: `builtin` registers a binder under its transform's name, with its
parameters, switch and warper flag read from the parameter table, and the helpers binders share.

Each binder runs once per batch (in `LogitsChain.from_rows`): it turns the rows' Python values into `[B]`
tensors holding the neutral value for rows that leave the transform off, works out the static hints
(`k_max`, `keep_max`, n-gram sizes) so the step never reads a tensor back, and returns the step
`(logits, tables) -> logits`. A sampler's binder sits in the sampler's own module, next to its function.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from decodebench.decoding.params.table import asks_for, transform_params
import decodebench.decoding.transforms.filters as filters
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


def values(ctx: PackContext, on: list[bool], field: str, off):
    return [getattr(r, field) if o else off for r, o in zip(ctx.rows, on)]


def min_keep(ctx: PackContext) -> Tensor:
    return ctx.longs([r.min_tokens_to_keep for r in ctx.rows])


def keep_max(ctx: PackContext, on: list[bool]) -> int:
    return max(r.min_tokens_to_keep for r, o in zip(ctx.rows, on) if o)


def on_rows_only(ctx: PackContext, on: list[bool], run: Callable[[Tensor, Tensor], Tensor]) -> Step:
    """Run `run(logits_subset, row_index)` on the rows that asked, copying the others through.

    Every per-row filter binds through this: in a batch that mixes strategies (a study's fused batch) a
    filter then costs its own rows' share of the vocabulary passes, not the whole batch's. Rows are
    independent, so each row's result is the one it gets alone. The rows are written back in place when
    the chain marks `x` as its own (`tables.owned`: made by an earlier step of this call, eager), else
    into a copy: the caller's logits are never changed."""
    if all(on):
        return lambda x, tables: run(x, None)
    idx = ctx.longs([i for i, o in enumerate(on) if o])

    def step(x: Tensor, tables) -> Tensor:
        out = run(x.index_select(0, idx), idx)
        if getattr(tables, "owned", None) is x:  # an earlier step's own output, read by nobody else: in place
            return x.index_copy_(0, idx, out)  # (a [B, V] copy per filter is what a wide fused batch paid)
        return x.index_copy(0, idx, out)

    return step


def rows_of(col: Tensor, idx: Tensor | None) -> Tensor:
    return col if idx is None else col.index_select(0, idx)


def float_column(ctx: PackContext, on: list[bool], field: str, off) -> Tensor:
    return ctx.floats([off if not o or getattr(r, field) is None else getattr(r, field) for r, o in zip(ctx.rows, on)])


def on_column(ctx: PackContext, on: list[bool]) -> Tensor:
    return torch.tensor(on, dtype=torch.bool, device=ctx.device)


def pad_rows(ctx: PackContext, rows: list[list], fill) -> list[list]:
    width = max(1, max(len(r) for r in rows))
    return [r + [fill] * (width - len(r)) for r in rows]


def check_ids(ctx: PackContext, name: str, ids: list[int]) -> None:
    bad = sorted({t for t in ids if t >= ctx.vocab_size})
    if bad:
        raise ValueError(f"{name} names token ids {bad} outside the vocabulary (size {ctx.vocab_size})")


def top_k_bounds(ctx: PackContext, on: list[bool]) -> list[int | None]:
    """Per row: the effective k (`max(top_k, min_tokens_to_keep)`) when it cuts the vocab, else None."""
    v = ctx.vocab_size
    return [max(r.top_k, r.min_tokens_to_keep) if o and max(r.top_k, r.min_tokens_to_keep) < v else None
            for r, o in zip(ctx.rows, on)]


def bind_top_k_top_p(ctx: PackContext, on_k: list[bool], on_p: list[bool]) -> Step:
    """top_k directly followed by top_p: one fused step (`top_k_top_p`), bit-equal to the two."""
    k, mtk = ctx.longs(values(ctx, on_k, "top_k", 0)), min_keep(ctx)
    p = ctx.floats(values(ctx, on_p, "top_p", math.inf))
    k_max = max([b for b in top_k_bounds(ctx, on_k) if b is not None], default=0)
    support = ctx.support
    return lambda x, tables: filters.top_k_top_p(x, k, p, mtk, k_max=k_max, support=support)
