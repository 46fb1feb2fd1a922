"""History-dependent transforms: penalties, n-gram bans, minimum length, logit bias and bans.

All are pure batched functions `[B, V] -> [B, V]` with per-row parameters (a Python number or a `[B]`
tensor). The token history comes in as `[B, T]` ids (-1 marks positions that do not count), as a
`[B, V]` count table (`token_counts`), or as left-padded `input_ids` with an `attention_mask`; padding
never counts, so a row's result does not depend on its batch-mates' lengths.

HF equivalents (bit-equal on the same logits): `repetition_penalty` = `RepetitionPenaltyLogitsProcessor`,
`no_repeat_ngram` = `NoRepeatNGramLogitsProcessor`, `min_new_tokens` =
`MinNewTokensLengthLogitsProcessor`, `logit_bias` / `ban_tokens` = `SequenceBiasLogitsProcessor` /
`NoBadWordsLogitsProcessor` restricted to single tokens. `presence_penalty` and `frequency_penalty` follow
the OpenAI API and vLLM (`logits -= frequency * count`, then `logits -= presence * (count > 0)`, over
generated tokens only); HF has no equivalent.

Example::

    >>> ids = torch.tensor([[5, 1, 1, -1]])                # token 1 seen twice, 5 once; -1 ignored
    >>> repetition_penalty(torch.tensor([[1., 2., 3., 4., 5., -6.]]), 2.0, ids)
    tensor([[  1.,   1.,   3.,   4.,   5., -12.]])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from decodebench.decoding.transforms.filters import NEG_INF, column, opmath, scalar_op


# ------------------------------------------------------------------------------------ history tables
def _history(input_ids: Tensor, vocab_size: int, attention_mask: Tensor | None, start: int) -> Tensor:
    """`input_ids[:, start:]` with padding and ids outside the vocab sent to a spare column `V`."""
    ids = input_ids[:, start:]
    bad = ids >= vocab_size
    if attention_mask is not None:
        bad = bad | (attention_mask[:, start:] == 0)
    return ids.masked_fill(bad, vocab_size)


def token_counts(input_ids: Tensor, vocab_size: int, attention_mask: Tensor | None = None, start: int = 0) -> Tensor:
    """`[B, V]` int32: how often each token occurs in `input_ids[:, start:]` (real tokens only)."""
    return counts_with_spare(input_ids, vocab_size, attention_mask, start)[:, :vocab_size]


def counts_with_spare(input_ids: Tensor, vocab_size: int, attention_mask: Tensor | None, start: int) -> Tensor:
    """`[B, V + 1]` counts; column V collects padding, so later updates can scatter pads there too."""
    ids = _history(input_ids, vocab_size, attention_mask, start)
    out = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.int32, device=ids.device)
    return out.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))


# ----------------------------------------------------------------------------------------- penalties
def repetition_penalty(logits: Tensor, repetition_penalty, token_ids: Tensor) -> Tensor:
    """Each token in `token_ids` once: divided by the penalty when positive, multiplied when negative
    (HF, CTRL). `token_ids` is `[B, T]` history with -1 (or any id outside `[0, V)`) for positions that
    do not count (padding, or the prompt for generated-only rows); a penalty of 1 changes nothing.

    Like HF, it gathers the history's logits, penalises them and scatters them back: `O(B * T)` work
    plus one copy of the logits, rather than several passes over `[B, V]`.
    """
    v = logits.shape[-1]
    if token_ids.shape[1] == 0:  # no history yet: nothing to penalise (and argmax needs a column)
        return logits.clone()
    # the penalty stays in float32 on half logits, as HF's Python float does (see processors.scalar_op)
    pen = column(repetition_penalty, logits, name="repetition_penalty").to(opmath(logits.dtype))
    real = (token_ids >= 0) & (token_ids < v)
    any_real = real.any(dim=-1, keepdim=True)
    # Positions that do not count re-write a token that does (first real one; token 0 in an empty row)
    # with that token's own result, so every duplicate write carries the same value.
    first = token_ids.gather(1, real.int().argmax(dim=-1, keepdim=True))
    ids = torch.where(real, token_ids, torch.where(any_real, first, 0))
    score = logits.gather(1, ids)
    wide = score.to(pen.dtype)
    penalised = torch.where(score < 0, wide * pen, wide / pen).to(logits.dtype)
    return logits.clone().scatter_(1, ids, torch.where(any_real, penalised, score))


def frequency_penalty(logits: Tensor, frequency_penalty, counts: Tensor) -> Tensor:
    """`logits - frequency_penalty * count` with `counts` `[B, V]` over generated tokens (vLLM order)."""
    f = column(frequency_penalty, logits, name="frequency_penalty")
    return scalar_op(logits, f, lambda x, col: x - col * counts)


def presence_penalty(logits: Tensor, presence_penalty, counts: Tensor) -> Tensor:
    """`logits - presence_penalty * (count > 0)` with `counts` `[B, V]` over generated tokens."""
    p = column(presence_penalty, logits, name="presence_penalty")
    return scalar_op(logits, p, lambda x, col: x - col * (counts > 0))


# --------------------------------------------------------------------------------------- n-gram bans
def no_repeat_ngram(
    logits: Tensor,
    input_ids: Tensor,
    ngram_size,
    attention_mask: Tensor | None = None,
    *,
    sizes: Sequence[int] | None = None,
) -> Tensor:
    """Ban every token that would complete an n-gram already present in the row's history (HF).

    The row's last `n - 1` real tokens are matched against every window of `n` real tokens; a match bans
    the window's last token. Windows touching padding never match. `ngram_size` 0 disables the row.
    `sizes` lists the distinct sizes in use (packed once by the chain); one vectorised pass per size.

    >>> ids = torch.tensor([[7, 8, 9, 7]])                  # "7 8" seen: after 7, ban 8
    >>> no_repeat_ngram(torch.zeros(1, 10), ids, 2)[0, 8]
    tensor(-inf)
    """
    n_col = column(ngram_size, logits, torch.long, "no_repeat_ngram_size")
    if sizes is None:
        sizes = [int(n) for n in n_col.unique().tolist() if n > 0]  # a sync; the chain packs this
    b, t = input_ids.shape
    v = logits.shape[-1]
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask != 0
    banned = torch.zeros(b, v + 1, dtype=torch.bool, device=logits.device)
    for n in sizes:
        if t < n:  # no complete n-gram yet: nothing to ban (HF's cur_len < n)
            continue
        windows = input_ids.unfold(1, n, 1)  # [B, t - n + 1, n]
        prefix = input_ids[:, t + 1 - n :]
        match = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
        match &= real.unfold(1, n, 1).all(dim=-1)
        match &= real[:, t + 1 - n :].all(dim=-1, keepdim=True) & (n_col == n)
        target = torch.where(match, windows[..., -1].clamp(max=v), v)  # non-matches go to the spare column
        banned.scatter_(1, target, True)
    return logits.masked_fill(banned[:, :v], NEG_INF)


# ------------------------------------------------------------------------------------ minimum length
def _ids(eos_token_id, device) -> Tensor:
    if isinstance(eos_token_id, Tensor):
        return eos_token_id.to(device=device, dtype=torch.long).reshape(-1)
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device)


def min_new_tokens(logits: Tensor, min_new_tokens, step, eos_token_id) -> Tensor:
    """EOS tokens get `-inf` while the row has generated fewer than `min_new_tokens` tokens.

    `step` (tokens generated so far) is an int or a `[B]` tensor; `eos_token_id` an int or a list.
    """
    v = logits.shape[-1]
    is_eos = torch.isin(torch.arange(v, device=logits.device), _ids(eos_token_id, logits.device))
    need = column(min_new_tokens, logits, torch.long, "min_new_tokens")
    early = column(step, logits, torch.long, "step") < need  # [B, 1]
    return torch.where(early & is_eos, NEG_INF, logits)


# --------------------------------------------------------------------------------- bias and bans
def _sparse_rows(token_ids, values, logits: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """`[B, L]` ids and values; a flat list means the same for every row; id -1 pads a row."""
    b = logits.shape[0]
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=logits.device)
    vals = torch.as_tensor(values, dtype=torch.float32, device=logits.device)
    if ids.dim() == 1:
        ids, vals = ids.expand(b, -1), vals.expand(b, -1)
    if ids.shape[0] != b or ids.shape != vals.shape:
        raise ValueError(f"{name}: token ids {tuple(ids.shape)} and values {tuple(vals.shape)} must be [{b}, L]")
    return ids, vals


def add_sparse(logits: Tensor, token_ids: Tensor, values: Tensor) -> Tensor:
    """`logits[b, token_ids[b, j]] += values[b, j]`; entries with id -1 add nothing."""
    pad = token_ids < 0
    # A pad adds 0.0 to token 0: the value is unchanged (x + 0.0 == x), and no spare column is needed.
    vals = values.to(logits.dtype).masked_fill(pad, 0.0)
    return logits.scatter_add(1, token_ids.masked_fill(pad, 0), vals)


def logit_bias(logits: Tensor, token_ids, bias) -> Tensor:
    """Add a bias to chosen tokens: `token_ids` and `bias` are `[B, L]` (pad ids with -1) or flat lists
    for every row. Biases are rounded to float32 first, like HF's `SequenceBiasLogitsProcessor`.

    >>> logit_bias(torch.zeros(1, 4), [1, 3], [2.5, -1.0])
    tensor([[ 0.0000,  2.5000,  0.0000, -1.0000]])
    """
    ids, vals = _sparse_rows(token_ids, bias, logits, "logit_bias")
    return add_sparse(logits, ids, vals)


def ban_tokens(logits: Tensor, token_ids) -> Tensor:
    """Set chosen tokens to `-inf` (HF adds a `-inf` bias: we do the same). `[B, L]`, -1 pads."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=logits.device)
    ids, vals = _sparse_rows(ids, torch.full(ids.shape, -math.inf), logits, "bad_words_ids")
    return add_sparse(logits, ids, vals)
