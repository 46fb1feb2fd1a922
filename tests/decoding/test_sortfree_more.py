"""Sort-free typical, tail-free and mirostat 1.0 give the full-sort reference's kept set, values and tokens.

Each case compares the candidate path (small `K`, so that on small vocabularies some rows are decided by
the candidates and others fall back) with `candidates=0` (the full sort, itself checked against HF and
llama.cpp in test_processors_hf.py and test_llamacpp.py), and checks that the fast path answered rows
itself, and that its check matters: forcing `ok` on the rows it refused gives other kept sets.
"""

from __future__ import annotations

import pytest
import torch

import decodebench.decoding.transforms.filters as filters
import decodebench.decoding.transforms.llamacpp as llamacpp
from decodebench.decoding import row_keys, sample
from decodebench.decoding.params import SamplingParams
from decodebench.decoding.transforms import sortfree_more as sm
from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from tests.decoding.helpers import make_logits
from tests.decoding.test_sortfree import ALL_DTYPES, _cases, _peaked

V_BIG = 49152


def _om(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _settings(b: int, seed: int, lo: float, hi: float, off: float):
    """Per-row parameters in [lo, hi] with every fifth row off, and min_tokens_to_keep in 1..4 (mixed rows)."""
    g = torch.Generator().manual_seed(seed)
    q = lo + torch.rand(b, generator=g, dtype=torch.float64) * (hi - lo)
    q[::5] = off
    return q, torch.randint(1, 5, (b,), generator=g)


# --------------------------------------------------------------------------------- kept set = full sort
def _typical(x, p, mtk, k):
    return filters.typical(x, p, mtk, candidates=k)


def _typical_ok(x, p, mtk, k):
    return sm.typical_cut(x, sm.typical_scores(x), p[:, None].to(x.dtype), mtk[:, None], k)[1]


def _tail_free(x, z, mtk, k):
    return llamacpp.tail_free(x, z, mtk, candidates=k)


def _tail_free_ok(x, z, mtk, k):
    return sm.tail_free_kept(x, z[:, None].to(_om(x.dtype)), mtk[:, None], k)[1]


def _mirostat(x, mu, mtk, k):
    return llamacpp.mirostat_v1(x, mu.float(), x.shape[1], candidates=k)


def _mirostat_ok(x, mu, mtk, k):
    return sm.mirostat_v1_kept(x, mu.float()[:, None].to(_om(x.dtype)), x.shape[1], 100, max(k, 100))[1]


TRANSFORMS = {  # name: (transform, its ok, parameter range and off value, candidate counts)
    "typical": (_typical, _typical_ok, (0.2, 0.99, float("inf")), (16, 64, 256)),
    "tail_free": (_tail_free, _tail_free_ok, (0.3, 0.99, 1.0), (16, 64, 256)),
    "mirostat_v1": (_mirostat, _mirostat_ok, (2.0, 14.0, 10.0), (100, 256)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
def test_candidates_equal_full_sort(name, dtype):
    fn, ok_fn, (lo, hi, off), ks = TRANSFORMS[name]
    answered = fell_back = 0
    for label, x in _cases(dtype):
        for k in ks:
            q, mtk = _settings(x.shape[0], seed=k + len(label), lo=lo, hi=hi, off=off)
            fast, slow = fn(x, q, mtk, k), fn(x, q, mtk, 0)
            assert torch.equal(fast.isinf(), slow.isinf()), (label, k)
            assert torch.equal(fast, slow), (label, k)
            ok = ok_fn(x, q, mtk, k)
            answered, fell_back = answered + int(ok.sum()), fell_back + int((~ok).sum())
    assert answered > 2 * fell_back and fell_back > 5, (answered, fell_back)  # both kinds of rows occurred


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_mixed_batches_of_one_parameter(name):
    """Peaked and flat rows in one batch, one parameter for all: the decided and the sorted rows mix."""
    fn, ok_fn, _, _ = TRANSFORMS[name]
    x = _peaked(12, 6000, torch.float32, seed=8)
    x[8:] = make_logits(4, 6000, seed=9)
    for q in {"typical": (0.5, 0.9, 0.95), "tail_free": (0.9, 0.95), "mirostat_v1": (6.0, 10.0)}[name]:
        qq, mtk = torch.full((12,), q, dtype=torch.float64), torch.ones(12, dtype=torch.long)
        assert torch.equal(fn(x, qq, mtk, 512), fn(x, qq, mtk, 0)), q
        assert ok_fn(x, qq, mtk, 512)[:8].any(), q


# ------------------------------------------------------------------------------------- the fast path
def test_fast_path_decides_most_peaked_rows():
    """The module docstring's fractions, on 16 of its `[64, 49152]` peaked float32 rows at K = 1024
    (measured here: typical 0.5 / 0.9 100% / 69%, tail-free 0.9 / 0.95 100% / 94%, mirostat 1.0 at mu 10
    100%): a path that always fell back, or a bound that got looser, fails here."""
    got = sm.decided_fractions(_peaked(16, V_BIG, torch.float32, seed=2))
    assert got["typical 0.5"] >= 0.8 and got["typical 0.9"] >= 0.4, got
    assert got["tail_free 0.9"] >= 0.8 and got["tail_free 0.95"] >= 0.8, got
    assert got["mirostat_v1 mu=10"] >= 0.8, got


def test_flat_rows_rarely_decide_typical_at_high_mass():
    """The known limit (sortfree_more's docstring): on flat rows the softmax sum's proven error (~3.7e-4
    of the mass) is wider than one token's mass (~3e-4), so typical 0.9 sorts almost every row; tokens
    stay the reference's all the same."""
    x = make_logits(8, V_BIG, seed=3)
    got = sm.decided_fractions(x)
    assert got["typical 0.9"] <= 0.25, got
    assert torch.equal(filters.typical(x, 0.9), filters.typical(x, 0.9, candidates=0))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_forcing_ok_on_refused_rows_changes_the_answer(name, monkeypatch):
    """The check matters: with `ok` forced True, the rows it refused keep another set than the reference's."""
    fn, ok_fn, (lo, hi, off), ks = TRANSFORMS[name]
    target = {"typical": (filters, "typical_cut"), "tail_free": (llamacpp, "tail_free_kept"),
              "mirostat_v1": (llamacpp, "mirostat_v1_kept")}[name]
    real = getattr(*target)

    def forced(*args):
        answer, ok = real(*args)
        return answer, torch.ones_like(ok)

    differ = 0
    for label, x in _cases(torch.float32):
        for k in ks:
            q, mtk = _settings(x.shape[0], seed=k + len(label), lo=lo, hi=hi, off=off)
            refused = ~ok_fn(x, q, mtk, k)
            slow = fn(x, q, mtk, 0)
            monkeypatch.setattr(*target, forced)
            unchecked = fn(x, q, mtk, k)
            monkeypatch.setattr(*target, real)
            wrong = (unchecked != slow).any(-1)
            assert not wrong[~refused].any(), (label, k)  # on the rows it accepted, the same answer
            differ += int(wrong[refused].sum())
    assert differ > 0


def test_typical_threshold_on_a_reference_cumsum_value():
    """The hard case for a bound: `typical_p` equal to the reference's own rounded cumulative mass at a
    position, so `cum < mass` fails there by a hair; only the rounding bound (and its fallback) gets it."""
    x = _peaked(32, 3000, torch.float32, seed=21)
    scores = sm.typical_scores(x)
    idx = torch.sort(scores, dim=-1).indices
    cum = x.gather(-1, idx).softmax(-1).cumsum(-1)
    mass = cum.gather(1, (torch.arange(32) % 12)[:, None])[:, 0].double()
    assert torch.equal(filters.typical(x, mass, candidates=64), filters.typical(x, mass, candidates=0))


# ------------------------------------------------------------------------------------- through the engine
def _run(rows, x_steps, v):
    chain = LogitsChain.from_rows(rows, vocab_size=v, eos_token_id=None, device="cpu")
    keys = row_keys(4, [str(i) for i in range(len(rows))], [0] * len(rows))
    ids = torch.zeros(len(rows), 1, dtype=torch.long)
    out = []
    for step, x in enumerate(x_steps):
        logits = chain(x, DecodeState(ids, torch.ones_like(ids), 1, step, keys=keys))
        tok = sample(logits, keys, step, chain.sample_mode, candidates=chain.candidates)
        chain.update(tok)
        ids = torch.cat([ids, tok[:, None]], 1)
        out.append(tok)
    return torch.stack(out, 1)


def test_sampled_tokens_unchanged_through_the_chain(monkeypatch):
    """A seeded run with typical, tail-free and mirostat 1.0 rows draws the same tokens whether the
    transforms take their candidates (the default) or sort every row (`usable` patched off)."""
    v = 4096
    rows = [SamplingParams(do_sample=True, typical_p=0.5), SamplingParams(do_sample=True, typical_p=0.9),
            SamplingParams(do_sample=True, tfs_z=0.95), SamplingParams(do_sample=True, tfs_z=0.8, temperature=0.7),
            SamplingParams(do_sample=True, mirostat=1, mirostat_tau=5.0, mirostat_eta=0.1),
            SamplingParams(do_sample=True, mirostat=1, mirostat_tau=3.0, mirostat_eta=0.2, min_tokens_to_keep=2)]
    steps = [_peaked(len(rows), v, torch.float32, seed=30 + s) for s in range(6)]
    decided = []
    for target in (sm.typical_cut, sm.tail_free_kept, sm.mirostat_v1_kept):
        module = filters if target is sm.typical_cut else llamacpp

        def counted(*args, _real=target):
            answer, ok = _real(*args)
            decided.append(int(ok.sum()))
            return answer, ok

        monkeypatch.setattr(module, target.__name__, counted)
    fast = _run(rows, steps, v)
    assert sum(decided) >= 0.8 * len(decided) * 2  # two rows per transform; most decided without a sort
    monkeypatch.setattr(filters, "usable", lambda *a: False)
    monkeypatch.setattr(llamacpp, "usable", lambda *a: False)
    n = len(decided)
    assert torch.equal(fast, _run(rows, steps, v))
    assert len(decided) == n  # the second run sorted every row


@pytest.mark.slow
def test_compiled_fullgraph_gives_eager_result():
    """Under torch.compile the three sort (typical's proof needs eager's scores bit for bit; tail-free's
    and mirostat 1.0's `torch.cond` fallbacks made inductor misplace typical's kept values in one graph):
    no graph break, and the eager results (of the candidate path, too), with and without fallback rows."""
    x = _peaked(8, 4096, torch.float32, seed=5)
    x[6:] = make_logits(2, 4096, seed=6)
    p = torch.tensor([0.9, 0.95, 0.5, 0.99, 0.9, 0.95, 0.5, 0.99], dtype=torch.float64)
    mu = torch.full((8,), 10.0)

    def chain(x, p, mu):
        return (filters.typical(x, p), llamacpp.tail_free(x, p, candidates=256),
                llamacpp.mirostat_v1(x, mu, 4096, candidates=256))

    fn = torch.compile(chain, fullgraph=True, backend="inductor", dynamic=False)
    for batch in (x, torch.cat([x[:6], x[:2] * 1.5])):
        eager = (filters.typical(batch, p, candidates=0), llamacpp.tail_free(batch, p, candidates=0),
                 llamacpp.mirostat_v1(batch, mu, 4096, candidates=0))
        for got, want, fast in zip(fn(batch, p, mu), eager, chain(batch, p, mu)):
            assert torch.equal(got, want) and torch.equal(fast, want)
