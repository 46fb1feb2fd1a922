"""DRY ("Don't Repeat Yourself", by p-e-w; llama.cpp's `dry` sampler, ported from koboldcpp by pi6am) as a
batched transform.

A token that would extend a sequence already seen in the row's history is penalised by
`multiplier * base ** (length - allowed_length)` when the repeated sequence (the history's suffix) is at least
`allowed_length` long. Sequence breakers (token sequences, e.g. a newline) cap how far back a repeat may
reach: a match never spans the most recent breaker, and single-token breakers are never penalised.

llama.cpp scans a ring buffer with the Z-algorithm per row; here every offset of every row is matched at
once, one comparison per extra token of match length, so the work is `O(B * T * L)` for matches of length
L, without a per-row host loop. The history is the row's real tokens (prompt included, as llama.cpp's
server feeds the prompt to its samplers), the last `penalty_last_n` of them (-1: all).

    >>> ids = torch.tensor([[0, 1, 2, 0, 1]])    # "0 1" was followed by 2: 2 is penalised
    >>> dry(torch.zeros(1, 4), ids, torch.ones_like(ids), 1.0, 1.1, 2, -1)[0, 2].item() < 0
    True
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin, float_column, values
from decodebench.decoding.transforms.candidates import on_host
from decodebench.decoding.transforms.filters import column
from decodebench.decoding.transforms.registry import PackContext, Step

FLOAT_MAX_LOG = 88.7228391  # llama.cpp's clamp on the exponent, so base ** exp stays a finite float


def _window(attention_mask: Tensor, last_n: Tensor) -> Tensor:
    """`[B, 1]` number of trailing tokens DRY looks at: the row's real tokens, at most `last_n` (-1: all)."""
    real = (attention_mask != 0).sum(dim=-1, keepdim=True)
    return torch.where(last_n < 0, real, torch.minimum(real, last_n.clamp(min=0)))


def _rep_limit(ids: Tensor, n: Tensor, single: Tensor | None, multi: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """`[B, 1]` longest repeat allowed: the distance back to the most recent sequence breaker, else `n`.

    `single` `[B, V + 1]` bool marks single-token breakers per row; `multi` lists `(seq [S], rows [B])` for
    longer ones. A breaker found `i` tokens from the end whose tail has length s gives `i - s`."""
    b, t = ids.shape
    i = torch.arange(t, device=ids.device)  # i-th token from the end sits at column t - 1 - i
    back = ids.flip(-1)
    best = torch.full((b, t), -1, dtype=torch.long, device=ids.device)  # longest tail matched at i
    if single is not None:
        best = torch.where(single.gather(1, back), 0, best)
    for seq, rows in multi:
        s = seq.numel() - 1
        if s + 1 > t:
            continue
        hit = back == seq[0]
        for o in range(s):  # the tail follows the head: i - 1 - o tokens from the end
            nxt = torch.roll(back, shifts=o + 1, dims=1)
            hit &= (nxt == seq[o + 1]) & (i >= o + 1)
        best = torch.where(hit & rows[:, None] & (s > best), s, best)
    found = (best >= 0) & (i < n)
    first = torch.where(found.any(-1, keepdim=True), found.int().argmax(-1, keepdim=True), t)
    return torch.where(first < t, first - best.gather(1, first.clamp(max=t - 1)), n)


def dry(
    logits: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    multiplier,
    base,
    allowed_length,
    penalty_last_n,
    *,
    single_breakers: Tensor | None = None,
    multi_breakers: Sequence[tuple[Tensor, Tensor]] = (),
) -> Tensor:
    """Subtract DRY's penalty. `input_ids`/`attention_mask` `[B, T]` left-padded; per-row parameters;
    `single_breakers` `[B, V + 1]` bool (column V: ids outside the vocabulary); `multi_breakers` as in
    `_rep_limit`. A row with multiplier 0, base < 1 or penalty_last_n 0 is unchanged."""
    b, v = logits.shape
    # llama.cpp keeps multiplier and base as floats and computes the penalty in double
    mult = column(multiplier, logits, torch.float32, "dry_multiplier").double()
    bas = column(base, logits, torch.float32, "dry_base").double()
    allowed = column(allowed_length, logits, torch.long, "dry_allowed_length")
    last_n = column(penalty_last_n, logits, torch.long, "dry_penalty_last_n")
    n = _window(attention_mask, last_n)
    on = (mult != 0) & (bas >= 1) & (last_n != 0) & (n > allowed)
    t = input_ids.shape[1]
    if t < 2 or not bool(on.any()):  # a CPU-side read on CPU; on GPU one sync per step (DRY is opt-in)
        return logits.clone()
    ids = input_ids.clamp(min=0, max=v)  # ids outside the vocabulary share the spare column V
    limit = _rep_limit(ids, n, single_breakers, multi_breakers)
    on &= limit >= allowed
    # match[k]: length of the match between the suffix ending at the last token and the one ending k back
    k = torch.arange(1, t, device=ids.device)  # offsets
    length = torch.zeros(b, t - 1, dtype=torch.long, device=ids.device)
    alive = torch.ones(b, t - 1, dtype=torch.bool, device=ids.device)
    host = on_host(ids)  # a CPU reads the longest limit and stops early; a device runs every offset, no sync
    cap = int(limit.max()) if host else t
    for m in range(min(cap, t)):
        a = t - 1 - m  # column of the suffix's m-th token from the end
        cols = a - k
        ok = (cols >= 0) & (cols >= t - n)  # inside the row's window
        other = ids.gather(1, cols.clamp(min=0).expand(b, -1))
        alive &= ok & (other == ids[:, a : a + 1]) & (m < limit)
        if host and not bool(alive.any()):
            break
        length += alive
    # the token after each matched suffix would extend the repeat: it gets the longest length seen
    nxt = ids.gather(1, (t - k).expand(b, -1))
    valid = (k <= n - 1) & (length >= allowed) & on
    table = torch.zeros(b, v + 1, dtype=torch.long, device=ids.device)
    table.scatter_reduce_(1, torch.where(valid, nxt, v), torch.where(valid, length, 0), reduce="amax")
    has = torch.zeros(b, v + 1, dtype=torch.bool, device=ids.device)
    has.scatter_(1, torch.where(valid, nxt, v), True)
    if single_breakers is not None:
        has &= ~single_breakers
    has, table = has[:, :v], table[:, :v]
    exp = (table - allowed).to(torch.float64)
    max_exp = torch.where(bas > 1.000001, torch.floor(FLOAT_MAX_LOG / torch.log(bas)), 0.0)
    exp = torch.where((max_exp > 0) & (exp > max_exp), max_exp, exp)
    penalty = torch.where(has, mult * bas.pow(exp), 0.0)
    return (logits.double() - penalty).to(logits.dtype)  # `float -= double`: one rounding


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


@builtin("dry", dry)
def _dry(ctx: PackContext, on: list[bool]) -> Step:
    mult, base = float_column(ctx, on, "dry_multiplier", 0.0), float_column(ctx, on, "dry_base", 1.75)
    allowed = ctx.longs(values(ctx, on, "dry_allowed_length", 0))
    last_n = ctx.longs(values(ctx, on, "dry_penalty_last_n", 0))
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
        return dry(x, s.input_ids, s.attention_mask, mult, base, allowed, last_n,
                     single_breakers=single, multi_breakers=multi_t)

    return step
