"""llama.cpp's samplers: the cases of llama.cpp's tests/test-sampling.cpp, ported, and random mixed batches
against a row-at-a-time reference written from src/llama-sampling.cpp, in fp32, bf16 and fp16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decodebench.decoding import dry, dynatemp, tail_free, top_n_sigma, xtc
from decodebench.decoding.transforms.penalties import frequency_penalty, presence_penalty, token_counts

from .helpers import DTYPES, make_logits

F32 = np.float32


def _logits(probs, dtype=torch.float32):
    return torch.log(torch.tensor([probs], dtype=torch.float64)).to(dtype)


def _renorm(out: torch.Tensor) -> list[float]:
    """llama.cpp's `dist` after the sampler: the kept tokens' probabilities, renormalised, in id order."""
    return out.double().softmax(-1)[0].tolist()


def _close(got, want, tol=1e-5):
    assert len(got) == len(want) and all(abs(g - w) < tol for g, w in zip(got, want)), (got, want)


# ------------------------------------------------------------------------------ ported test vectors
@pytest.mark.parametrize("temp,want", [(1.0, [0.1, 0.2, 0.3, 0.4]), (0.0, [0.0, 0.0, 0.0, 1.0])])
def test_temp_ext_without_range_is_plain_temperature(temp, want):
    _close(_renorm(dynatemp(_logits([0.1, 0.2, 0.3, 0.4]), temp, 0.0, 1.0)), want)


@pytest.mark.parametrize("n,want", [(1.0, [0.0, 0.0, 0.428571, 0.571429]), (0.0, [0.1, 0.2, 0.3, 0.4]),
                                    (3.0, [0.1, 0.2, 0.3, 0.4])])
def test_top_n_sigma_cases(n, want):
    _close(_renorm(top_n_sigma(_logits([0.1, 0.2, 0.3, 0.4]), n)), want)


@pytest.mark.parametrize("t,want", [(0.09, [0.1]), (0.19, [0.2, 0.1]), (0.29, [0.3, 0.2, 0.1]),
                                    (0.39, [0.4, 0.3, 0.2, 0.1])])
def test_xtc_cases(t, want):
    # llama.cpp's test leaves the kept tokens' probabilities as they were, listed most likely first
    probs = [0.4, 0.3, 0.2, 0.1]
    out = xtc(_logits(probs), 0.99, t, torch.tensor([0.0]), 0)
    kept = sorted((p for p, x in zip(probs, out[0].tolist()) if x != -math.inf), reverse=True)
    _close(kept, want)


@pytest.mark.parametrize("z,want", [(0.25, [0.3]), (0.75, [0.3, 0.25]), (0.99, [0.3, 0.25])])
def test_tail_free_cases(z, want):
    # from llama.cpp's test-sampling.cpp before tail-free sampling was removed (test_tfs, min_keep 1)
    probs = [0.1, 0.15, 0.2, 0.25, 0.3]
    out = tail_free(_logits(probs), z, 1)
    _close(sorted((p for p, x in zip(probs, out[0].tolist()) if x != -math.inf), reverse=True), want)


DRY_CASES = [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
]


def _breaker_tables(b, v, breakers):
    single = torch.zeros(b, v + 1, dtype=torch.bool)
    multi = []
    for seq in breakers:
        if len(seq) == 1:
            single[:, seq[0]] = True
        else:
            multi.append((torch.tensor(seq), torch.ones(b, dtype=torch.bool)))
    return single, multi


@pytest.mark.parametrize("case", DRY_CASES)
def test_dry_cases(case):
    probs, last, want, mult, base, allowed, last_n, breakers = case
    ids = torch.tensor([last])
    single, multi = _breaker_tables(1, len(probs), breakers)
    out = dry(_logits(probs), ids, torch.ones_like(ids), mult, base, allowed, last_n,
              single_breakers=single, multi_breakers=multi)
    _close(_renorm(out), want)


@pytest.mark.parametrize("last,want", [([0], [0.000011, 0.249997, 0.249997, 0.249997, 0.249997]),
                                       ([0, 1, 2], [0.000023, 0.000023, 0.000023, 0.499966, 0.499966]),
                                       ([0, 1, 2, 0, 0], [0.000000, 0.000023, 0.000023, 0.499977, 0.499977])])
def test_frequency_and_presence_cases(last, want):
    x = _logits([0.2] * 5)
    counts = token_counts(torch.tensor([last]), 5)
    _close(_renorm(presence_penalty(frequency_penalty(x, 5.0, counts), 5.0, counts)), want)


# --------------------------------------------------------------- row-at-a-time references (float32)
def _sorted_p(row):
    """llama.cpp's softmax_impl on the candidates (finite logits), sorted descending: (ids, probs)."""
    ids = [i for i in np.argsort(-row, kind="stable") if np.isfinite(row[i])]
    vals = row[ids].astype(np.float64)
    e = np.exp(vals - vals[0])
    return ids, (e / e.sum()).astype(F32)


def ref_top_n_sigma(row, n):
    fin = row[np.isfinite(row)].astype(np.float64)
    if n <= 0 or len(fin) <= 1:
        return set(np.flatnonzero(np.isfinite(row)))
    cut = fin.max() - n * fin.std()
    return {i for i in np.flatnonzero(np.isfinite(row)) if row[i] >= cut}


def ref_tail_free(row, z, mtk):
    ids, p = _sorted_p(row)
    if z >= 1 or len(ids) <= 2:
        return set(ids)
    d1 = p[:-1] - p[1:]
    d2 = np.abs(d1[:-1] - d1[1:])
    d2 = d2 / d2.sum() if d2.sum() > 1e-6 else np.full(len(d2), 1.0 / len(d2))
    cum, last = 0.0, len(ids)
    for i, d in enumerate(d2):
        cum += d
        if cum > z and i >= mtk:
            last = i
            break
    return set(ids[:last])


def ref_xtc(row, prob, thr, coin, mtk):
    ids, p = _sorted_p(row)
    if prob <= 0 or thr > 0.5 or len(ids) < 2 or coin > prob:
        return set(ids)
    pos_last = 0
    for i in range(len(ids)):
        if p[i] >= thr:
            pos_last = i
        else:
            break
    if len(ids) - pos_last >= mtk and pos_last > 0:
        return set(ids[pos_last:])
    return set(ids)


def _kept(out):
    return [set(np.flatnonzero(np.isfinite(r))) for r in out.float().numpy()]


def _rows(x):
    return x.float().numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_n_sigma_random_mixed_batch(dtype):
    x = make_logits(8, 300, dtype, seed=31, neg_inf=0.2)
    n = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 0.0, 0.8]
    assert _kept(top_n_sigma(x, torch.tensor(n))) == [ref_top_n_sigma(r, v) for r, v in zip(_rows(x), n)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tail_free_random_mixed_batch(dtype):
    x = make_logits(8, 300, dtype, seed=32, neg_inf=0.3)
    z, mtk = [1.0, 0.5, 0.9, 0.95, 0.99, 0.3, 0.7, 1.0], [1, 1, 2, 1, 5, 1, 3, 1]
    got = _kept(tail_free(x, torch.tensor(z), torch.tensor(mtk)))
    assert got == [ref_tail_free(r, a, m) for r, a, m in zip(_rows(x), z, mtk)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_xtc_random_mixed_batch(dtype):
    x = make_logits(8, 200, dtype, seed=33) * 0.5  # flatter rows: several tokens above the threshold
    x[:4] = make_logits(4, 200, dtype, seed=34)
    prob, thr = [0.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0], [0.1, 0.05, 0.1, 0.6, 0.01, 0.02, 0.005, 0.01]
    coin = [0.3, 0.9, 0.6, 0.2, 0.4, 0.1, 0.49, 0.99]
    got = _kept(xtc(x, torch.tensor(prob), torch.tensor(thr), torch.tensor(coin), 1))
    assert got == [ref_xtc(r, p, t, c, 1) for r, p, t, c in zip(_rows(x), prob, thr, coin)]
    assert any(len(g) < 200 for g in got) and any(len(g) == 200 for g in got)


def ref_dynatemp(row, t, r, e):
    fin = np.isfinite(row)
    n = fin.sum()
    if r <= 0:
        dyn = t
    elif n <= 1:
        return row
    else:
        p = np.exp(row[fin].astype(np.float64) - row[fin].max())
        p /= p.sum()
        ent = -(p[p > 0] * np.log(p[p > 0])).sum()
        lo, hi = max(0.0, t - r), t + r
        dyn = lo + (hi - lo) * (ent / math.log(n)) ** e
    if dyn <= 0:
        out = np.full_like(row, -np.inf)
        out[np.argmax(row)] = row[np.argmax(row)]
        return out
    return row / dyn


@pytest.mark.parametrize("dtype", DTYPES)
def test_dynatemp_random_mixed_batch(dtype):
    x = make_logits(6, 100, dtype, seed=35, neg_inf=0.2)
    t, r, e = [1.0, 0.7, 1.5, 0.3, 1.0, 0.8], [0.0, 0.5, 1.0, 0.5, 0.2, 0.0], [1.0, 1.0, 2.0, 0.5, 1.0, 1.0]
    out = dynatemp(x, torch.tensor(t), torch.tensor(r), torch.tensor(e)).float().numpy()
    for i, row in enumerate(_rows(x)):
        want = ref_dynatemp(row, t[i], r[i], e[i]).astype(F32)
        # one rounding to the logits dtype from float32 arithmetic: compare at that dtype's resolution
        tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
        fin = np.isfinite(want)
        assert (np.isfinite(out[i]) == fin).all()
        assert np.allclose(out[i][fin], want[fin], rtol=tol, atol=tol)


def ref_dry(tokens, v, mult, base, allowed, last_n, breakers):
    """llama.cpp's DRY on one row, by naive matching instead of the Z-algorithm."""
    hist = tokens if last_n < 0 else tokens[max(0, len(tokens) - last_n):] if last_n > 0 else []
    n = len(hist)
    pen = np.zeros(v)
    if mult == 0 or base < 1 or last_n == 0 or n <= allowed:
        return pen
    rat = lambda i: hist[n - 1 - i]  # noqa: E731
    limit = n
    for i in range(n):
        best = -1
        for seq in breakers:
            s = len(seq) - 1
            if seq[0] == rat(i) and s <= i and all(seq[1 + o] == rat(i - o - 1) for o in range(s)):
                best = max(best, s)
        if best >= 0:
            limit = i - best
            break
    if limit < allowed:
        return pen
    longest: dict[int, int] = {}
    for k in range(1, n):
        m = 0
        while m + k < n and rat(m) == rat(m + k):
            m += 1
        m = min(m, limit)
        if m >= allowed:
            tok = rat(k - 1)
            longest[tok] = max(longest.get(tok, 0), m)
    singles = {seq[0] for seq in breakers if len(seq) == 1}
    max_exp = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    for tok, m in longest.items():
        if tok not in singles:
            ex = m - allowed
            ex = max_exp if max_exp > 0 and ex > max_exp else ex
            pen[tok] = float(F32(mult)) * float(F32(base)) ** ex
    return pen


@pytest.mark.parametrize("dtype", DTYPES)
def test_dry_random_mixed_batch(dtype):
    v = 6
    g = torch.Generator().manual_seed(36)
    rows = [torch.randint(0, 3, (int(n),), generator=g).tolist() for n in (12, 20, 7, 16, 25, 3)]
    rows[1] = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1] + [3, 0, 1, 2, 0, 1]  # long repeats
    mult, base, allowed, last_n = [1.0, 0.8, 0.0, 2.0, 1.0, 1.0], [1.75, 1.1, 1.75, 1.5, 3.0, 1.75], \
        [2, 1, 2, 3, 2, 1], [-1, 10, -1, -1, 8, -1]
    breakers = [[5], [4, 5]]
    rows[3] = rows[3][:8] + [4, 5] + rows[3][8:]  # a multi-token breaker inside a row
    t = max(len(r) for r in rows)
    ids = torch.tensor([[3] * (t - len(r)) + r for r in rows])  # left padding with a real token id
    mask = torch.tensor([[0] * (t - len(r)) + [1] * len(r) for r in rows])
    x = make_logits(6, v, dtype, seed=37)
    single, multi = _breaker_tables(6, v, breakers)
    args = (torch.tensor(mult), torch.tensor(base), torch.tensor(allowed), torch.tensor(last_n))
    out = dry(x, ids, mask, *args, single_breakers=single, multi_breakers=multi)
    for i, r in enumerate(rows):
        pen = ref_dry(r, v, mult[i], base[i], allowed[i], last_n[i], breakers)
        want = (x[i].double() - torch.tensor(pen)).to(dtype)
        assert torch.equal(out[i], want), (i, out[i], want)
    assert not torch.equal(out, x)
    # an accelerator's path (every offset, no early stop read back per offset) gives the same bits
    from decodebench.decoding.transforms.candidates import accelerator_paths

    with accelerator_paths():
        assert torch.equal(dry(x, ids, mask, *args, single_breakers=single, multi_breakers=multi), out)


def test_llamacpp_order_places_every_sampler_as_its_default_chain():
    from decodebench.decoding import process_logits, row_keys

    x = make_logits(2, 50, torch.float32, seed=40)
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(41))
    _, names = process_logits(
        x, ids, order="llamacpp", return_chain=True, keys=row_keys(0, ["a", "b"], [0, 0]), prompt_length=6,
        temperature=0.8, dynatemp_range=0.2, xtc_probability=0.5, min_p=0.05, top_p=0.9, typical_p=0.9, tfs_z=0.9,
        top_k=40, top_n_sigma=2.0, dry_multiplier=0.8, dry_sequence_breakers=[], presence_penalty=0.1,
        repetition_penalty=1.1, mirostat=2)
    # common/common.h: penalties, dry, top_n_sigma, top_k, (tfs_z), typ_p, top_p, min_p, xtc, temperature
    # (temp_ext); mirostat replaces the final draw
    assert names == ["repetition_penalty", "presence_penalty", "dry", "top_n_sigma", "top_k", "tfs_z", "typical_p",
                     "top_p", "min_p", "xtc", "dynatemp", "mirostat"]
