"""Kirchenbauer et al. (2023) watermarking: the green-list bias (HF `WatermarkLogitsProcessor`) and its
detector (HF `WatermarkDetector`: z-score and p-value), with per-row settings.

At each step a row's green list is the first `int(V * gamma)` tokens of a permutation of the vocabulary
seeded from its previous token(s) ("lefthash": `hashing_key * last token`; "selfhash": the minimum of
`hashing_key * table[t] * table[last]` over the context window, tried for each of the 40 likeliest
candidates). Green tokens get `+delta`. The permutation comes from `torch.randperm` with a CPU generator,
exactly HF's, so a text watermarked here is detected by HF's detector and the other way round.

Host work: one `randperm(V)` per row per step (40 for selfhash) and a read of each row's last tokens (a
device sync). That is HF's cost too; the watermark is opt-in.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from decodebench.decoding.transforms.binding import builtin
from decodebench.decoding.transforms.registry import PackContext, Step

TABLE_SIZE = 1_000_003


@dataclass(frozen=True)
class WatermarkKey:
    """What fixes a green list: the vocabulary size, gamma, the hashing key, the scheme, the context width."""

    vocab_size: int
    gamma: float = 0.25
    hashing_key: int = 15485863
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    @property
    def greenlist_size(self) -> int:
        return int(self.vocab_size * self.gamma)


@lru_cache(maxsize=8)
def _fixed_table(hashing_key: int) -> Tensor:
    g = torch.Generator().manual_seed(hashing_key)
    return torch.randperm(TABLE_SIZE, generator=g)


def _seed(key: WatermarkKey, context: list[int]) -> int:
    context = context[-key.context_width :]
    if key.seeding_scheme == "selfhash":
        table = _fixed_table(key.hashing_key)
        a = table[torch.tensor(context) % TABLE_SIZE] + 1
        b = table[context[-1] % TABLE_SIZE] + 1
        seed = int((key.hashing_key * a * b).min())
    else:
        seed = key.hashing_key * context[-1]
    return seed % (2**64 - 1)


def greenlist(key: WatermarkKey, context: tuple[int, ...]) -> Tensor:
    """The green token ids `[int(V * gamma)]` after `context` (the row's tokens so far)."""
    g = torch.Generator().manual_seed(_seed(key, list(context)))
    return torch.randperm(key.vocab_size, generator=g)[: key.greenlist_size]


_green_cached = lru_cache(maxsize=4096)(greenlist)


def watermark(logits: Tensor, input_ids: Tensor, keys: list[WatermarkKey | None], deltas: list[float]) -> Tensor:
    """Add `delta` to each watermarked row's green tokens (rows whose key is None are unchanged).
    `input_ids` `[B, T]`: the rows' tokens so far (the last `context_width` columns seed the list)."""
    out = logits.clone()
    rows = [i for i, k in enumerate(keys) if k is not None]
    if not rows:
        return out
    width = max(keys[i].context_width for i in rows)
    if input_ids.shape[1] < width:  # HF skips seeding (and biasing) until the context is long enough
        return out
    tails = input_ids[:, -width:].tolist()  # the one read-back per step
    for i in rows:
        k = keys[i]
        ctx = tuple(tails[i][-k.context_width :])
        if k.seeding_scheme == "selfhash":
            green = _selfhash_green(k, ctx, logits[i])
        else:
            green = _green_cached(k, ctx).to(logits.device)
        # `+ python float`, HF's very op: torch rounds the scalar to bf16/fp16 for add on CPU (unlike div
        # and mul, which keep it in float32), so any other formulation would differ in the last bit
        out[i, green] = out[i, green] + float(deltas[i])
    return out


def _selfhash_green(key: WatermarkKey, ctx: tuple[int, ...], scores: Tensor) -> Tensor:
    """HF's rejection sampling: of the 40 likeliest candidates, those green under their own seed."""
    order = scores.sort(dim=-1, descending=True).indices[:40].tolist()
    green = [c for c in order if bool((_green_cached(key, ctx + (c,)) == c).any())]
    return torch.tensor(green, dtype=torch.long, device=scores.device)


# ------------------------------------------------------------------------------------------------ detection
def detect(key: WatermarkKey, token_ids: list[int], ignore_repeated_ngrams: bool = False) -> dict[str, float]:
    """HF `WatermarkDetector` on one text's token ids (drop the prompt and any BOS first): tokens scored,
    green count, green fraction, z-score `(green - gamma n) / sqrt(n gamma (1 - gamma))` and one-sided
    p-value. A text shorter than the context width + 1 gives NaNs."""
    selfhash = int(key.seeding_scheme == "selfhash")
    n = key.context_width + 1 - selfhash
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if len(token_ids) - key.context_width < 1 or not grams:
        nan = float("nan")
        return {"num_tokens_scored": 0.0, "num_green_tokens": nan, "green_fraction": nan, "z_score": nan,
                "p_value": nan}
    freq = collections.Counter(grams)
    green = {}
    for g in freq:
        prefix = g if selfhash else g[:-1]
        green[g] = bool((_green_cached(key, prefix) == g[-1]).any())
    if ignore_repeated_ngrams:
        scored, hits = float(len(freq)), float(sum(green.values()))
    else:
        scored, hits = float(sum(freq.values())), float(sum(c * green[g] for g, c in freq.items()))
    gamma = key.gamma
    z = (hits - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))
    return {"num_tokens_scored": scored, "num_green_tokens": hits, "green_fraction": hits / scored,
            "z_score": z, "p_value": 0.5 * math.erfc(z / math.sqrt(2))}


@builtin("watermark", watermark)
def _watermark(ctx: PackContext, on: list[bool]) -> Step:
    keys = [WatermarkKey(ctx.vocab_size, r.watermark_gamma, r.watermark_hashing_key, r.watermark_seeding_scheme,
                         r.watermark_context_width) if o else None for r, o in zip(ctx.rows, on)]
    deltas = [r.watermark_delta if o else 0.0 for r, o in zip(ctx.rows, on)]
    return lambda x, tables: watermark(x, tables.state.input_ids, keys, deltas)
