"""`prefix_allowed_tokens_fn` constraints, registered by name (HF `PrefixConstrainedLogitsProcessor`).

A plugin registers a function `fn(batch_id, input_ids) -> list of allowed token ids` and a strategy names
it (`strategy.prefix_allowed_tokens_fn=<name>`); configs never import code by path::

    from decodebench.decoding import register_prefix_fn

    @register_prefix_fn("digits_only")
    def digits_only(batch_id, input_ids):
        return DIGIT_IDS

`batch_id` is the row's index in the chain and `input_ids` its `[T]` ids so far (left padding included),
as HF passes them with one beam. The function runs on the host, once per row per step.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin
from decodebench.decoding.transforms.registry import PackContext, Step
from decodebench.registry import Registry

PREFIX_FNS: Registry[Callable] = Registry("prefix_allowed_tokens_fn")


def register_prefix_fn(name: str):
    """Decorator: register `fn(batch_id, input_ids) -> allowed ids` under `name`."""
    return PREFIX_FNS.register(name)


def prefix_allowed(logits: Tensor, input_ids: Tensor, fns: Sequence[Callable | None]) -> Tensor:
    """`logits + mask` with mask 0 on each constrained row's allowed tokens, `-inf` elsewhere; rows whose fn
    is None are unchanged. An empty allowed list is an error; a row whose allowed tokens are all `-inf`
    gets the bare mask (score 0 on the allowed tokens), so the constraint still holds, as in HF."""
    mask = torch.zeros_like(logits)
    rows = [i for i, f in enumerate(fns) if f is not None]
    for i in rows:
        allowed = fns[i](i, input_ids[i])
        if len(allowed) == 0:
            raise ValueError(f"prefix_allowed_tokens_fn returned no allowed token for row {i}: "
                             "the constraint is unsatisfiable")
        mask[i] = -math.inf
        mask[i, torch.as_tensor(allowed, dtype=torch.long, device=logits.device)] = 0
    out = logits + mask
    constrained = torch.zeros(logits.shape[0], 1, dtype=torch.bool, device=logits.device)
    constrained[rows] = True
    stuck = out.amax(dim=-1, keepdim=True).isneginf() & constrained
    return torch.where(stuck, mask, out)


def check_prefix_fn(name: str) -> str:
    """The `prefix_allowed_tokens_fn` row's check: a registered function (plugins register theirs before configs are checked)."""
    if name not in PREFIX_FNS:
        raise ValueError(PREFIX_FNS.unknown_message(name))
    return name


@builtin("prefix_allowed_tokens_fn", prefix_allowed)
def _prefix(ctx: PackContext, on: list[bool]) -> Step:
    fns = [PREFIX_FNS.get(r.prefix_allowed_tokens_fn) if o else None for r, o in zip(ctx.rows, on)]
    return lambda x, tables: prefix_allowed(x, tables.state.input_ids, fns)
