"""Greedy and seeded sampling by the exponential race, with counter-based noise.

A sampled row picks `argmax(softmax(logits) / q)` with `q ~ Exp(1)` i.i.d. per token: token `i` wins with
probability `p_i` exactly, with no sort and no device sync. The noise for token `v` of a row is a pure
function of (row key, step, v), where the row key hashes (seed, prompt id, sample index): a prompt's
sample never depends on its batch size, position or batch-mates, on any device.

Noise, per element, in int32 ops only (int64 multiplies are slow on CPUs without AVX-512):
`k1, k2 = splitmix64(key + (step + 1) * golden)` split in two 32-bit words (per row, cheap);
`h = fmix32(fmix32(v * 0x9E3779B9 + k1) ^ k2)` (murmur3's finaliser, twice, so that rows are not shifted
copies of one stream); `u = (2 * (h >> 9) + 1) / 2**24` in (0, 1), exact in float32; `q = -log(u)`.

Shapes: `keys` `[B]` int64, `logits` `[B, V]`, `step` an int or `[B]`, result `[B]` int64.

Example::

    >>> keys = row_keys(seed=0, prompt_ids=["p0", "p1"], sample_indices=[0, 0])
    >>> logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])
    >>> sample(logits, keys, step=0, do_sample=torch.tensor([True, False]))
    tensor([1, 0])
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

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


def _fmix32_(h: Tensor, tmp: Tensor) -> None:
    """murmur3 fmix32 in place on an int32 tensor; `tmp` is scratch of the same shape (no allocation)."""
    for shift, mult in ((16, _FMIX1), (13, _FMIX2), (16, None)):
        torch.bitwise_right_shift(h, shift, out=tmp)
        tmp &= (1 << (32 - shift)) - 1
        h ^= tmp
        if mult is not None:
            h.mul_(_signed(mult, 32))  # int32 products wrap mod 2**32


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


def _row_words(keys: Tensor, step) -> tuple[Tensor, Tensor]:
    """Two `[B, 1]` int32 words per (row key, step)."""
    step = torch.as_tensor(step, dtype=torch.long, device=keys.device)
    z = _splitmix64(keys.long() + (step + 1) * _signed(_GOLDEN64, 64))
    lo, hi = z & 0xFFFFFFFF, _srl(z, 32, 64)
    to32 = lambda w: ((w ^ 0x80000000) - 0x80000000).to(torch.int32)[:, None]  # noqa: E731
    return to32(lo), to32(hi)


_WEYL: dict[tuple[int, str], Tensor] = {}


def _weyl(vocab_size: int, device: torch.device) -> Tensor:
    """`[V]` int32 `v * 0x9E3779B9 mod 2**32`, cached per (V, device): built once, read every step."""
    key = (vocab_size, str(device))
    if key not in _WEYL:
        v = torch.arange(vocab_size, dtype=torch.long, device=device) * _GOLDEN32 & 0xFFFFFFFF
        _WEYL[key] = ((v ^ 0x80000000) - 0x80000000).to(torch.int32)
    return _WEYL[key]


def uniform_bits(keys: Tensor, step, vocab_size: int) -> Tensor:
    """`[B, V]` int32 in `[0, 2**23)`: the 23 random bits behind each token's noise."""
    k1, k2 = _row_words(keys, step)
    h = _weyl(vocab_size, keys.device) + k1  # int32 adds wrap too
    tmp = torch.empty_like(h)
    _fmix32_(h, tmp)
    h ^= k2
    _fmix32_(h, tmp)
    torch.bitwise_right_shift(h, 9, out=tmp)
    return tmp.bitwise_and_(0x7FFFFF)


def exponential_noise(keys: Tensor, step, vocab_size: int) -> Tensor:
    """`[B, V]` float32 Exp(1) noise, a pure function of (key, step, token id)."""
    u = uniform_bits(keys, step, vocab_size).to(torch.float32)
    u.mul_(2.0**-23).add_(2.0**-24)  # (2m + 1) / 2**24: exact, never 0 or 1
    return u.log_().neg_()


def sample(logits: Tensor, keys: Tensor, step, do_sample: Tensor | bool) -> Tensor:
    """`[B]` next tokens: argmax for greedy rows, the exponential race for sampled rows.

    `do_sample` is a `[B]` bool tensor, or a plain bool for a uniform batch (skips the unused path; a
    chain's `sample_mode` gives whichever fits). Temperature-0 rows come out of the chain with a single
    finite logit, so they pick the argmax whichever way they are flagged.
    """
    if do_sample is False:
        return logits.argmax(dim=-1)
    keys = keys.to(logits.device)
    probs = logits.softmax(dim=-1)
    sampled = probs.div_(exponential_noise(keys, step, logits.shape[-1])).argmax(dim=-1)
    if do_sample is True:
        return sampled
    return torch.where(do_sample.to(logits.device), sampled, logits.argmax(dim=-1))
