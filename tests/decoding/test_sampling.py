"""Seeded sampling: noise is a function of (seed, prompt, sample, step) only; samples follow softmax."""

from __future__ import annotations

import math

import torch

from decodebench.decoding import DecodeState, LogitsChain, SamplingParams, exponential_noise, row_keys, sample
from decodebench.decoding.sampling import uniform_bits

M32, M64 = (1 << 32) - 1, (1 << 64) - 1


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = h * 0x85EBCA6B & M32
    h ^= h >> 13
    h = h * 0xC2B2AE35 & M32
    return h ^ (h >> 16)


def _reference_bits(key: int, step: int, v: int) -> int:
    """The documented recipe in plain Python integers (no wrapping surprises possible)."""
    z = (key + (step + 1) * 0x9E3779B97F4A7C15) & M64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & M64
    z ^= z >> 31
    h = (_fmix32(v * 0x9E3779B9 & M32) + (z & M32)) & M32
    h ^= h >> 16
    h = h * 0x85EBCA6B & M32
    h ^= z >> 32
    h ^= h >> 13
    h = h * 0xC2B2AE35 & M32
    h ^= h >> 16
    return h >> 9


def test_noise_matches_the_reference_recipe():
    keys = row_keys(7, ["a", "b", "c"], [0, 1, 2])
    bits = uniform_bits(keys, 5, 1000)
    for r in range(3):
        key = int(keys[r]) & M64
        for v in (0, 1, 2, 499, 998, 999):
            assert int(bits[r, v]) == _reference_bits(key, 5, v)
    q = exponential_noise(keys, 5, 1000)
    assert q.dtype == torch.float32 and bool((q > 0).all()) and bool(torch.isfinite(q).all())


def _reference_z(key: int, step: int) -> int:
    z = (key + (step + 1) * 0x9E3779B97F4A7C15) & M64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & M64
    return z ^ (z >> 31)


def test_row_words_are_the_halves_of_splitmix64_for_host_and_device_steps():
    """The row words (the int64 -> int32 conversions that keep the low bits, the fused `alpha` add) equal
    the recipe's halves, for keys of both signs and steps far past 2**32, given as ints or as tensors."""
    from decodebench.decoding.sampling import _row_words

    g = torch.Generator().manual_seed(3)
    keys = torch.cat([torch.randint(-2**63, 2**63 - 1, (61,), generator=g, dtype=torch.long),
                      torch.tensor([0, -1, 2**63 - 1, -2**63])])
    steps = torch.randint(0, 2**40, (65,), generator=g, dtype=torch.long)
    steps[:4] = torch.tensor([0, 1, 2**32 - 1, 2**32])
    signed = lambda w: w - (1 << 32) if w >> 31 else w  # noqa: E731
    lo, hi = _row_words(keys, steps)
    assert lo.dtype == hi.dtype == torch.int32 and lo.shape == (65, 1)
    for r in range(65):
        z = _reference_z(int(keys[r]) & M64, int(steps[r]))
        assert (int(lo[r, 0]), int(hi[r, 0])) == (signed(z & M32), signed(z >> 32)), r
    for step in (0, 7, 2**33 + 5):
        lo, hi = _row_words(keys, step)
        for r in (0, 30, 61, 62, 63, 64):
            z = _reference_z(int(keys[r]) & M64, step)
            assert (int(lo[r, 0]), int(hi[r, 0])) == (signed(z & M32), signed(z >> 32)), (r, step)
    lo32, hi32 = _row_words(keys, (steps % 1000).int())  # an int32 step counter is widened first
    lo64, hi64 = _row_words(keys, (steps % 1000))
    assert torch.equal(lo32, lo64) and torch.equal(hi32, hi64)


def test_the_running_batchs_word_table_gives_the_row_words_of_each_rows_step():
    """`row_word_table` (built when a row joins) read by `table_words` at per-row steps equals
    `_row_words` at those steps, for keys of both signs, at every step a row can take."""
    from decodebench.decoding.sampling import _row_words, row_word_table, table_words

    g = torch.Generator().manual_seed(5)
    keys = torch.cat([torch.randint(-2**63, 2**63 - 1, (9,), generator=g, dtype=torch.long),
                      torch.tensor([0, -1, 2**63 - 1, -2**63])])
    table = row_word_table(keys, 40)
    assert table.shape == (13, 40, 2) and table.dtype == torch.int32
    for t in range(40):
        lo, hi = _row_words(keys, t)
        assert torch.equal(table[:, t, 0], lo[:, 0]) and torch.equal(table[:, t, 1], hi[:, 0]), t
    steps = torch.randint(0, 40, (13,), generator=g)
    got, want = table_words(table, steps), _row_words(keys, steps)
    assert got[0].shape == (13, 1) and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_row_keys_are_stable_and_distinct():
    a = row_keys(0, ["p0", "p1"], [0, 0])
    assert torch.equal(a, row_keys(0, ["p0", "p1"], [0, 0]))
    assert a.tolist() == [-9048239097443608037, -710835660291187800]  # fixed forever: results depend on it
    b = torch.cat([row_keys(0, ["p0"], [1]), row_keys(1, ["p0"], [0]), row_keys(0, ["p0 "], [0])])
    assert len(set(a.tolist() + b.tolist())) == 5


def _toy_logits(prefixes: list[list[int]], v: int) -> torch.Tensor:
    """A float64 toy model: fixed random logits depending on the whole prefix."""
    out = []
    for p in prefixes:
        g = torch.Generator().manual_seed(hash(tuple(p)) % (2**61))  # tuple-of-int hash is not salted
        out.append(torch.randn(v, generator=g, dtype=torch.float64) * 2)
    return torch.stack(out)


def _generate(requests: list[tuple[str, int, list[int], SamplingParams]], seed: int, steps: int, v: int = 64):
    """A tiny engine: left-padded batch, chain + sample per step, incremental counts."""
    t = max(len(r[2]) for r in requests)
    ids = torch.zeros(len(requests), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (_, _, prompt, _) in enumerate(requests):
        ids[i, t - len(prompt) :], mask[i, t - len(prompt) :] = torch.tensor(prompt), 1
    keys = row_keys(seed, [r[0] for r in requests], [r[1] for r in requests])
    chain = LogitsChain.from_rows([r[3] for r in requests], vocab_size=v, eos_token_id=0, device="cpu",
                                  dtype=torch.float64)
    for step in range(steps):
        prefixes = [ids[i][mask[i].bool()].tolist() for i in range(len(requests))]
        logits = chain(_toy_logits(prefixes, v), DecodeState(ids, mask, t, step))
        tok = sample(logits, keys, step, chain.sample_mode, support=chain.support)
        chain.update(tok)
        ids, mask = torch.cat([ids, tok[:, None]], 1), torch.cat([mask, torch.ones_like(tok)[:, None]], 1)
    return {(r[0], r[1]): ids[i, t:].tolist() for i, r in enumerate(requests)}


SAMPLED = SamplingParams(do_sample=True, temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2)
PLAIN = SamplingParams(do_sample=True)
GREEDY = SamplingParams(repetition_penalty=1.3)


def test_same_request_same_tokens_whatever_the_batch():
    a = ("prompt-a", 0, [5, 6, 7], SAMPLED)
    b = ("prompt-b", 3, [9], PLAIN)
    c = ("prompt-c", 1, [1, 2, 3, 4, 5, 6], GREEDY)
    d = ("prompt-a", 1, [5, 6, 7], SAMPLED)
    alone = {k: v for r in (a, b, c, d) for k, v in _generate([r], seed=42, steps=8).items()}
    assert _generate([a, b, c, d], seed=42, steps=8) == alone
    assert _generate([d, c, b, a], seed=42, steps=8) == alone
    mates = [("x", 0, [3, 3, 3, 3, 3, 3, 3, 3], PLAIN), a, ("y", 0, [8], SAMPLED), b]
    got = _generate(mates, seed=42, steps=8)
    assert got[("prompt-a", 0)] == alone[("prompt-a", 0)] and got[("prompt-b", 3)] == alone[("prompt-b", 3)]
    assert alone[("prompt-a", 0)] != alone[("prompt-a", 1)]  # another sample index, another sample
    other_seed = _generate([a, b], seed=43, steps=8)
    assert (other_seed[("prompt-a", 0)], other_seed[("prompt-b", 3)]) != (alone[("prompt-a", 0)], alone[("prompt-b", 3)])


def test_greedy_and_temperature_zero_rows_take_the_argmax():
    x = torch.randn(6, 100, generator=torch.Generator().manual_seed(0))
    keys = row_keys(0, list("abcdef"), [0] * 6)
    flags = torch.tensor([True, False, True, False, True, False])
    got = sample(x, keys, 3, flags)
    assert torch.equal(got[~flags], x.argmax(-1)[~flags])
    assert torch.equal(sample(x, keys, 3, False), x.argmax(-1))
    zero = LogitsChain.from_rows([SamplingParams(do_sample=True, temperature=0.0)] * 6, vocab_size=100,
                                 eos_token_id=None, device="cpu")
    state = DecodeState(torch.zeros(6, 0, dtype=torch.long), torch.zeros(6, 0, dtype=torch.long), 0, 0)
    assert zero.sample_mode is False
    assert torch.equal(sample(zero(x, state), keys, 3, True), x.argmax(-1))


def test_samples_follow_the_softmax():
    """Chi-square over 6 tokens, 30 000 draws (rows x steps). Deterministic given the seed: no flakes."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")], dtype=torch.float64)
    probs = logits.softmax(-1)
    rows, steps = 3000, 10
    keys = row_keys(123, [f"p{i}" for i in range(rows)], [0] * rows)
    counts = torch.zeros(6, dtype=torch.float64)
    for step in range(steps):
        tok = sample(logits.expand(rows, -1), keys, step, True)
        counts += torch.bincount(tok, minlength=6).double()
    n = rows * steps
    assert counts[5] == 0  # -inf is never drawn
    expected = probs[:5] * n
    chi2 = float(((counts[:5] - expected) ** 2 / expected).sum())
    assert chi2 < 30.0, chi2  # 4 degrees of freedom: P(chi2 > 30) < 1e-5 for a correct sampler
    assert math.isclose(float(counts[0] / n), float(probs[0]), abs_tol=0.01)


def test_noise_is_uniform_enough_across_vocab_and_rows():
    keys = row_keys(9, [str(i) for i in range(64)], [0] * 64)
    q = exponential_noise(keys, 0, 4096).double()
    assert abs(float(q.mean()) - 1.0) < 0.01 and abs(float(q.var()) - 1.0) < 0.03  # Exp(1): mean 1, var 1
    corr = torch.corrcoef(q[:8])  # rows are not shifted copies of one another
    assert float((corr - torch.eye(8)).abs().max()) < 0.06


def test_support_path_draws_the_same_tokens_as_the_full_path():
    from decodebench.decoding import top_k

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(32, 3000, generator=g) * 2).round()  # coarse grid: ties at the k-th value
    xk = top_k(x, torch.tensor([5, 20] * 16))
    xk[3] = x[3]  # an unfiltered row: more finite logits than the support, takes the full path
    keys = row_keys(5, [str(i) for i in range(32)], list(range(32)))
    flags = torch.arange(32) % 3 != 0
    for step in range(5):
        full = sample(xk, keys, step, flags)
        assert torch.equal(sample(xk, keys, step, flags, support=20), full)
        assert torch.equal(sample(xk, keys, step, True, support=24), sample(xk, keys, step, True))
