"""Multi-token sequence bias (transformers' `SequenceBiasLogitsProcessor`, also behind multi-token
`bad_words_ids`): the function, how per-row sequences are packed, and the binder."""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, check_ids
from decodebench.decoding.transforms.registry import PackContext, Step


def sequence_bias(
    logits: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    singles: Tensor,
    multi: list[tuple[Tensor, Tensor, Tensor]],
) -> Tensor:
    """HF `SequenceBiasLogitsProcessor` per row: `singles` `[B, V]` float32 biases for one-token sequences;
    `multi` lists `(prefixes [B, G, L], last [B, G], bias [B, G] float32)` for sequences of L + 1 tokens (a
    row's unused slots hold bias 0): a sequence's bias goes to its last token when the row's last L tokens
    equal its prefix. As in HF, biases are summed in the logits' dtype first, then added once.

    Unlike HF, a window reaching into left padding never matches, so a row's result does not depend on how
    much its batch-mates pad it (HF compares the pad ids too)."""
    bias = torch.zeros_like(logits)
    bias += singles.to(logits.device)
    t = input_ids.shape[1]
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
    for prefixes, last, vals in multi:
        n = prefixes.shape[-1]
        if n > t:  # the prefix is longer than the context: ignored, as in HF
            continue
        tail = input_ids[:, None, t - n :]
        match = (tail == prefixes).all(dim=-1) & real[:, t - n :].all(dim=-1, keepdim=True)
        bias.scatter_add_(1, last, torch.where(match, vals, 0.0).to(bias.dtype))
    return logits + bias


def pack_sequences(ctx: PackContext, name: str, per_row: list[list[tuple[tuple[int, ...], float]]]):
    """Per-row `(sequence, bias)` lists -> `sequence_bias`'s `singles [B, V]` and `multi` groups."""
    b, v = len(ctx.rows), ctx.vocab_size
    check_ids(ctx, name, [t for row in per_row for seq, _ in row for t in seq])
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


@builtin("sequence_bias", sequence_bias)
def _sequence_bias(ctx: PackContext, on: list[bool]) -> Step:
    singles, multi = pack_sequences(ctx, "sequence_bias", [list(r.sequence_bias) if o else [] for r, o in zip(ctx.rows, on)])

    def step(x: Tensor, tables) -> Tensor:
        s = tables.state
        return sequence_bias(x, s.input_ids, s.attention_mask, singles, multi)

    return step
