"""Greedy and seeded sampling by the exponential race, with counter-based noise.

A sampled row picks `argmax(softmax(logits) / q)` with `q ~ Exp(1)` i.i.d. per token, computed as
`argmax(logits - log q)`: token `i` wins with probability `p_i` exactly, with no sort and no device
sync. The noise for token `v` of a row is a pure function of (row key, step, v), where the row key
hashes (seed, prompt id, sample index): a prompt's sample never depends on its batch size, position or
batch-mates.

Noise, per element, in int32 ops only (int64 multiplies are slow on CPUs without AVX-512):
`k1, k2 = splitmix64(key + (step + 1) * 0x9E3779B97F4A7C15)` split in two 32-bit words (per row);
`h = R[v] + k1` with `R[v] = fmix32(v * 0x9E3779B9)` a cached per-token table; then murmur3's fmix32 on
`h` with `k2` XORed in after its first multiply; `m = h >>> 9` (23 bits); `u = (2m + 1) / 2**24`, exact in
float32 and never 0 or 1; `q = -log(u)`. All arithmetic wraps mod 2**32 / 2**64, as on every device.

Shapes: `keys` `[B]` int64, `logits` `[B, V]`, `step` an int or `[B]`, result `[B]` int64.

Example::

    >>> keys = row_keys(seed=0, prompt_ids=["p0", "p1"], sample_indices=[0, 0])
    >>> logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    >>> sample(logits, keys, step=0, do_sample=torch.tensor([True, False]))
    tensor([1, 0])
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
from torch import Tensor

from decodebench.decoding.transforms.candidates import host_eager, on_host

_M64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_GOLDEN32 = 0x9E3779B9
_FMIX1, _FMIX2 = 0x85EBCA6B, 0xC2B2AE35


def _signed(x: int, bits: int) -> int:
    """Two's-complement value of the low `bits` of x: torch integer tensors are signed."""
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def _srl(x: Tensor, s: int, bits: int) -> Tensor:
    """Logical right shift (torch's `>>` on signed ints is arithmetic)."""
    return (x >> s) & ((1 << (bits - s)) - 1)


def _splitmix64(z: Tensor) -> Tensor:
    z = (z ^ _srl(z, 30, 64)) * _signed(_MIX1, 64)  # int64 products wrap mod 2**64
    z = (z ^ _srl(z, 27, 64)) * _signed(_MIX2, 64)
    return z ^ _srl(z, 31, 64)


def _xorshift_(h: Tensor, shift: int, tmp: Tensor) -> None:
    """`h ^= h >>> shift` in place on int32, with `tmp` as scratch: no [B, V] allocation."""
    torch.bitwise_right_shift(h, shift, out=tmp)
    tmp &= (1 << (32 - shift)) - 1
    h ^= tmp


def _fmix32_(h: Tensor, tmp: Tensor, k2: Tensor | None = None) -> None:
    """murmur3's fmix32 in place; `k2` (if given) is XORed in after the first multiply."""
    _xorshift_(h, 16, tmp)
    h.mul_(_signed(_FMIX1, 32))  # int32 products wrap mod 2**32
    if k2 is not None:
        h ^= k2
    _xorshift_(h, 13, tmp)
    h.mul_(_signed(_FMIX2, 32))
    _xorshift_(h, 16, tmp)


def row_keys(
    seed: int, prompt_ids: Sequence[str], sample_indices: Sequence[int], device: torch.device | str | None = None
) -> Tensor:
    """`[B]` int64 keys from (seed, prompt id, sample index) per row, stable across processes.

    blake2b of an unambiguous encoding, never Python's salted `hash()`; ids are taken as strings.
    """
    if len(prompt_ids) != len(sample_indices):
        raise ValueError(f"{len(prompt_ids)} prompt ids but {len(sample_indices)} sample indices")
    keys = []
    for pid, idx in zip(prompt_ids, sample_indices):
        msg = repr((int(seed), str(pid), int(idx))).encode()
        digest = hashlib.blake2b(msg, digest_size=8, person=b"decodebench").digest()
        keys.append(_signed(int.from_bytes(digest, "little"), 64))
    return torch.tensor(keys, dtype=torch.long, device=device)


def _long(t: Tensor) -> Tensor:
    return t if t.dtype == torch.long else t.long()


def _row_words(keys: Tensor, step) -> tuple[Tensor, Tensor]:
    """Two `[B, 1]` int32 words per (row key, step): the low and high halves of a splitmix64 output.

    `key + (step + 1) * golden` is one fused add (`alpha`) and one scalar add; each half is one int64 ->
    int32 conversion, which keeps the low 32 bits (two's complement, on every device and in inductor's
    code), so the high half is `z >> 32` converted: the sign bits the arithmetic shift brings in are cut
    off. 16 ops for the batch, not 27 (tests/decoding/test_sampling.py checks the words against the
    masked formulas)."""
    lo, hi = _word_halves(keys, step)
    return lo[:, None], hi[:, None]


def _word_halves(keys: Tensor, step) -> tuple[Tensor, Tensor]:
    """`_row_words` before the trailing dim, for `keys` and `step` of any broadcastable shapes."""
    g = _signed(_GOLDEN64, 64)
    if isinstance(step, Tensor):  # a device step counter: no tensor built from Python data
        z = _splitmix64(torch.add(_long(keys), _long(step), alpha=g) + g)
    else:  # a host int: the same wrapped product, as a Python scalar
        z = _splitmix64(_long(keys) + _signed((int(step) + 1) * _GOLDEN64, 64))
    return z.to(torch.int32), (z >> 32).to(torch.int32)


def row_word_table(keys: Tensor, steps: int) -> Tensor:
    """`[B, steps, 2]` int32: `_row_words(keys, t)` for every step `t < steps`, built once per row when it
    joins a running batch. A decode step then reads its rows' words with one gather (`table_words`)
    instead of running splitmix64's 16 ops on `[B]`: on an accelerator, 15 fewer launches a step."""
    t = torch.arange(steps, dtype=torch.long, device=keys.device)
    return torch.stack(_word_halves(keys[:, None], t[None, :]), dim=-1)


def table_words(table: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """The `[B, 1]` words `_row_words` gives for each row's `step` `[B]`, read from `row_word_table`."""
    w = table.gather(1, step.to(torch.long)[:, None, None].expand(-1, 1, 2))
    return w[:, :, 0], w[:, :, 1]


_TABLES: dict[tuple[int, str], Tensor] = {}


def _token_table(vocab_size: int, device: torch.device) -> Tensor:
    """`[V]` int32 `fmix32(v * 0x9E3779B9)`: distinct, random-looking per-token words. Cached per
    (V, device): built once, read every step. Row words are added to it, so two rows (or steps) are
    not shifted copies of one stream, only coincide on about one token pair in 2**32 / V**2."""
    key = (vocab_size, str(device))
    if key not in _TABLES:
        v = torch.arange(vocab_size, dtype=torch.long, device=device) * _GOLDEN32 & 0xFFFFFFFF
        h = ((v ^ 0x80000000) - 0x80000000).to(torch.int32)
        _fmix32_(h, torch.empty_like(h))
        _TABLES[key] = h
    return _TABLES[key]


def _bits(keys: Tensor, step, vocab_size: int, token_ids: Tensor | None = None, words=None) -> Tensor:
    """23 random bits per (row, token): `[B, V]`, or `[B, S]` for the given `token_ids` `[B, S]`.
    `words`: the rows' `_row_words(keys, step)`, when the caller has them already."""
    k1, k2 = _row_words(keys, step) if words is None else words
    table = _token_table(vocab_size, keys.device)
    h = (table if token_ids is None else table[token_ids]) + k1  # int32 adds wrap too
    tmp = torch.empty_like(h)
    _fmix32_(h, tmp, k2)
    torch.bitwise_right_shift(h, 9, out=tmp)
    return tmp.bitwise_and_(0x7FFFFF)


def uniform_bits(keys: Tensor, step, vocab_size: int) -> Tensor:
    """`[B, V]` int32 in `[0, 2**23)`: the random bits behind each token's noise."""
    return _bits(keys, step, vocab_size)


def row_uniform(keys: Tensor, step, stream: int) -> Tensor:
    """`[B]` float32 uniform in (0, 1) per (row key, step, stream): a row's own coin, e.g. XTC's.

    The key is salted by `stream`, so the coin is independent of the token noise of the same step, and
    it depends on nothing but the row's key and the step: never on batch-mates."""
    salt = _signed((int(stream) + 1) * _MIX2 & _M64, 64)
    return _uniform(_bits(keys.long() ^ salt, step, 1)[:, 0])


_HALF_ULP: dict[str, Tensor] = {}


def _uniform(bits: Tensor) -> Tensor:
    """`(2m + 1) / 2**24` in one pass (convert, scale, add): exact in float32, never 0 or 1."""
    half = _HALF_ULP.get(str(bits.device))
    if half is None:  # made once per device, not per call
        half = _HALF_ULP[str(bits.device)] = torch.tensor(2.0**-24, device=bits.device)
    return torch.add(half, bits, alpha=2.0**-23)


def exponential_noise(keys: Tensor, step, vocab_size: int) -> Tensor:
    """`[B, V]` float32 Exp(1) noise `q = -log(u)`, a pure function of (key, step, token id)."""
    return _uniform(uniform_bits(keys, step, vocab_size)).log_().neg_()


def _race_scores(logits: Tensor, bits: Tensor) -> Tensor:
    """`logits - log(q)`: the exponential race in log space. Elementwise, with no normalising sum, so a
    token's score does not depend on which other tokens are scored (the support path relies on it)."""
    log_q = _uniform(bits).log_().neg_().log_()
    return logits - log_q


def sample(logits: Tensor, keys: Tensor, step, do_sample: Tensor | bool, *, support: int | None = None,
           candidates: tuple[Tensor, Tensor] | None = None, probe: bool = False,
           words: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """`[B]` next tokens: argmax for greedy rows, the exponential race for sampled rows.

    `argmax(softmax(x) / q)` equals `argmax(x - log q)` (log is monotone; the normaliser is per row), and
    the second needs no sum over the vocab. Equal scores go to the smaller token id on every path.
    `do_sample` is a `[B]` bool tensor, or a plain bool for a uniform batch (skips the unused path; a
    chain's `sample_mode` gives whichever fits). Temperature-0 rows come out of the chain with a single
    finite logit, so they pick the argmax whichever way they are flagged.

    `support` (a chain's `support`): at most this many finite logits per row, e.g. after top-k. On CPU,
    rows whose `support + 1`-th largest logit is `-inf` then draw noise for those tokens only, with the
    same bits and scores as the full path, so the token is the same; other rows take the full path.

    `candidates` (a chain's `candidates`): `(ids [B, K], inside [B])`, where every finite logit of an
    `inside` row lies at `ids` (a sort-free filter proved it). On CPU, eager, those rows race over their
    K candidates only, with the same per-token noise, so the token is the same; the others race over the
    whole row. Both shortcuts pick the rows to redo with `nonzero` (no scalar read).

    `probe` (a chain's `truncates`: a filter ran, so most rows keep few tokens): on CPU, eager, with neither
    hint, rows whose `PROBE_TIERS[0]`-th largest logit is `-inf` race over their top tokens only, the rest
    try the next tier, and what is left races over the whole row: the support path, with the bound found
    per row instead of known. The same token; in a study's fused batch, where a row-subset filter offers no
    candidates to the whole batch, this replaces the full-vocabulary race of almost every row.

    `words`: the rows' `_row_words(keys, step)` when the caller has them (the running batch reads them
    from its `row_word_table`); the same noise either way.
    """
    if do_sample is False:
        return logits.argmax(dim=-1)
    keys = keys.to(logits.device)
    v = logits.shape[-1]
    eager_cpu = host_eager(logits)
    if candidates is not None and eager_cpu:
        ids, inside = candidates
        sampled = _sample_within(logits, keys, step, ids, ~inside, do_sample, words=words)
    elif support is not None and support + 1 < v and on_host(logits):
        sampled = _sample_support(logits, keys, step, support + 1, do_sample, words)
    elif probe and eager_cpu and 4 * PROBE_TIERS[-1] < v:
        sampled = _sample_probed(logits, keys, step, do_sample, words)
    else:
        sampled = _race_scores(logits, _bits(keys, step, v, words=words)).argmax(dim=-1)
    if do_sample is True:
        return sampled
    if eager_cpu:  # the greedy rows' argmax alone (a study's batch has a few among hundreds)
        greedy = (~do_sample.to(logits.device)).nonzero()[:, 0]
        sampled[greedy] = logits.index_select(0, greedy).argmax(dim=-1)
        return sampled
    return torch.where(do_sample.to(logits.device), sampled, logits.argmax(dim=-1))


def sample_candidates(cand_logits: Tensor, ids: Tensor, keys: Tensor, step, vocab_size: int, words=None) -> Tensor:
    """`[B]` tokens by the exponential race over candidates only: `cand_logits` `[B, K]` are the row's
    (filtered) logits at token ids `ids` `[B, K]`. A token's noise depends on (key, step, id) alone, so
    when every finite logit of a row is among its candidates (a sort-free filter's `ok` rows) this is
    the token `sample` draws over the whole row; ties go to the smallest id, as there. `words`: the rows'
    `_row_words(keys, step)`, when the caller has them."""
    scores = _race_scores(cand_logits, _bits(keys.to(ids.device), step, vocab_size, ids, words))
    best = scores.amax(dim=-1, keepdim=True)
    return torch.where(scores == best, ids, vocab_size).amin(dim=-1)


# The probe's top-k sizes: in a study's fused batch on the embedded model, 85% of the sampled rows keep at
# most 256 tokens and 96% at most 1024 (the open_ended study, 8 prompts x 16 tokens).
PROBE_TIERS = (256, 1024)


def _sample_probed(logits: Tensor, keys: Tensor, step, do_sample: Tensor | bool, words=None) -> Tensor:
    """`sample` without a known bound: each tier's top-`s` tokens cover the rows whose `s`-th largest logit
    is `-inf` (every finite logit is among them); the rest go on to the next tier, then the whole row."""
    v = logits.shape[-1]
    words = _row_words(keys, step) if words is None else words
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    rows: Tensor | None = None  # None: every row
    for s in PROBE_TIERS:
        x = logits if rows is None else logits.index_select(0, rows)
        vals, ids = torch.topk(x, s, dim=-1)
        w = words if rows is None else (words[0][rows], words[1][rows])
        got = sample_candidates(vals, ids, keys, step, v, w)
        redo = vals[:, -1] != -math.inf
        if isinstance(do_sample, Tensor):  # greedy rows' draws are discarded anyway
            ds = do_sample.to(redo.device)
            redo &= ds if rows is None else ds[rows]
        if rows is None:
            out.copy_(got)
            rows = redo.nonzero()[:, 0]
        else:
            out[rows] = got
            rows = rows[redo.nonzero()[:, 0]]
        if not rows.numel():
            return out
    row_words = (words[0][rows], words[1][rows])
    out[rows] = _race_scores(logits.index_select(0, rows), _bits(keys, step, v, words=row_words)).argmax(dim=-1)
    return out


def _sample_support(logits: Tensor, keys: Tensor, step, s: int, do_sample: Tensor | bool, words=None) -> Tensor:
    vals, ids = torch.topk(logits, s, dim=-1)
    full = vals[:, -1] != -math.inf  # a finite logit may lie outside the top s: score the whole row
    return _sample_within(logits, keys, step, ids, full, do_sample, vals, words)


def _sample_within(logits: Tensor, keys: Tensor, step, ids: Tensor, full: Tensor, do_sample: Tensor | bool,
                   vals: Tensor | None = None, words=None) -> Tensor:
    """The race over `ids` `[B, K]` (their logits `vals`, gathered when not given); rows where `full`
    `[B]` race over the whole row instead. The rows to redo come from `nonzero`: on CPU, where this runs,
    no scalar is read."""
    v = logits.shape[-1]
    vals = logits.gather(1, ids) if vals is None else vals
    # once for the batch: the candidates and the redone rows share them
    words = _row_words(keys, step) if words is None else words
    out = sample_candidates(vals, ids, keys, step, v, words)
    if isinstance(do_sample, Tensor):
        full = full & do_sample.to(full.device)  # greedy rows' draws are discarded anyway
    rows = full.nonzero()[:, 0]
    if rows.numel():
        row_words = (words[0][rows], words[1][rows])
        out[rows] = _race_scores(logits[rows], _bits(keys, step, v, words=row_words)).argmax(dim=-1)
    return out
