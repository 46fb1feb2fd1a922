"""The sort-free paths give the full-sort reference's kept set and values, and the token sampled after.

Each case compares the candidate path (small `K` so that both the fast rows and the fallback rows are
exercised on small vocabularies) with `candidates=0` (the full sort, itself checked bit for bit against
transformers in test_processors_hf.py), and checks that the fast path did answer some rows itself: a
test where every row fell back would prove nothing.
"""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding import row_keys, sample
from decodebench.decoding.transforms.filters import top_p
from decodebench.decoding.transforms.sortfree import top_p_cut
from tests.decoding.helpers import make_logits

ALL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _peaked(b: int, v: int, dtype, seed: int) -> torch.Tensor:
    """LM-like rows: Zipf-shaped logits (`-s log rank`, s in [1.3, 2.3]) plus noise, in random order."""
    g = torch.Generator().manual_seed(seed)
    s = 1.3 + torch.rand(b, 1, generator=g, dtype=torch.float64)
    rank = torch.stack([torch.randperm(v, generator=g) for _ in range(b)]).double() + 1
    x = -s * rank.log() + 0.3 * torch.randn(b, v, generator=g, dtype=torch.float64)
    return x.to(dtype)


def _cases(dtype):
    b, v = 24, 2000
    yield "random", make_logits(b, v, dtype, seed=1)
    yield "peaked", _peaked(b, v, dtype, seed=2)
    yield "peaked-ties", (_peaked(b, v, dtype, seed=3) * 2).round() / 2
    yield "peaked-inf", _peaked(b, v, dtype, seed=4).masked_fill(make_logits(b, v, seed=5).isinf(), 0)
    x = _peaked(b, v, dtype, seed=6)
    x[:, 100:] = float("-inf")  # fewer finite tokens than candidates in some rows' reach
    yield "few-finite", x
    x = _peaked(b, v, dtype, seed=7)
    x[:3, 1:] = float("-inf")  # a single finite token
    x[3, :] = 0.0  # flat: every token tied
    yield "degenerate", x


def _row_settings(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(b, generator=g, dtype=torch.float64) * 0.98 + 0.01
    p[::5] = float("inf")  # off rows
    p[1::7] = 1.0
    mtk = torch.randint(1, 4, (b,), generator=g)
    return p, mtk


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
def test_top_p_candidates_equal_full_sort(dtype):
    answered = 0
    for label, x in _cases(dtype):
        for k in (16, 64, 256):
            p, mtk = _row_settings(x.shape[0], seed=k)
            fast, slow = top_p(x, p, mtk, candidates=k), top_p(x, p, mtk, candidates=0)
            assert torch.equal(fast.isinf(), slow.isinf()), (label, k)
            assert torch.equal(fast, slow), (label, k)
            thr = (1 - p[:, None]).to(dtype)
            answered += int(top_p_cut(x, thr, mtk[:, None], k)[1].sum())
    assert answered > 100  # the fast path decided many rows itself


@pytest.mark.parametrize("p", [0.5, 0.9, 0.95, 0.99])
def test_top_p_candidates_on_lm_like_logits_float32(p):
    """The engine's case: float32, one p for the batch; the rows the bound lets through are most rows."""
    x = _peaked(64, 8000, torch.float32, seed=int(p * 100))
    thr = torch.full((64, 1), 1 - p, dtype=torch.float64).float()
    _, ok = top_p_cut(x, thr, torch.ones(64, 1, dtype=torch.long), 512)
    assert ok.float().mean() > 0.5
    assert torch.equal(top_p(x, p, candidates=512), top_p(x, p, candidates=0))


def test_sampled_token_unchanged():
    x = _peaked(32, 3000, torch.float32, seed=11)
    keys = row_keys(0, [str(i) for i in range(32)], [0] * 32)
    for step in range(3):
        fast, slow = top_p(x, 0.9, candidates=64), top_p(x, 0.9, candidates=0)
        assert torch.equal(sample(fast, keys, step, True), sample(slow, keys, step, True))


def test_reference_arithmetic_assumptions():
    """The bounds assume torch's cumsum accumulates float32 in float64 and half types in float32,
    rounding each output once; if a torch upgrade changes that, this fails before any kept set does."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 5000, generator=g).softmax(-1)
    assert torch.equal(p.cumsum(-1), p.double().cumsum(-1).float())
    for dtype in (torch.bfloat16, torch.float16):
        h = p.to(dtype)[:, :300]
        acc, outs = torch.zeros(3), []
        for i in range(h.shape[1]):
            acc = acc + h[:, i].float()
            outs.append(acc.to(dtype))
        assert torch.equal(h.cumsum(-1), torch.stack(outs, 1))


def test_nan_and_inf_rows_fall_back():
    x = _peaked(4, 500, torch.float32, seed=3)
    x[0, 5] = float("nan")
    x[1, 7] = float("inf")
    x[2, :] = float("-inf")
    _, ok = top_p_cut(x, torch.full((4, 1), 0.1), torch.ones(4, 1, dtype=torch.long), 16)
    assert ok.tolist()[:3] == [False, False, False]
    assert torch.equal(top_p(x, 0.9, candidates=16).isnan(), top_p(x, 0.9, candidates=0).isnan())


@pytest.mark.slow
def test_compiled_fullgraph_gives_eager_result():
    """top-p's candidate path, min-p and typical under torch.compile(fullgraph=True), inductor on CPU:
    no graph break (top-p's fallback is a torch.cond), and the eager results."""
    from decodebench.decoding.transforms.filters import min_p, typical

    x = _peaked(8, 4096, torch.float32, seed=5)
    x[6:] = make_logits(2, 4096, seed=6)  # rows that need the fallback
    p = torch.tensor([0.9, 0.95, 0.5, 0.99, 0.9, 0.95, 0.5, 0.99], dtype=torch.float64)

    def chain(x, p):
        return top_p(x, p, candidates=256), min_p(x, p / 10, keep_sizes=[1]), typical(x, p)

    fn = torch.compile(chain, fullgraph=True, backend="inductor", dynamic=False)
    for batch in (x, torch.cat([x[:6], x[:2] * 1.5])):  # with and without fallback rows: one graph
        eager = (top_p(batch, p, candidates=0), min_p(batch, p / 10), typical(batch, p))
        for got, want in zip(fn(batch, p), eager):
            assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_threshold_on_a_reference_cumsum_value(dtype):
    """The hard case for a bound: `1 - top_p` equal to one of the reference's own rounded cumulative
    sums, so the reference's `cum <= thr` holds with equality there. The float64 estimate alone lands on
    either side; only the rounding bound (and the fallback it triggers) gives the reference's answer."""
    x = _peaked(32, 3000, dtype, seed=21)
    asc = torch.sort(x, dim=-1).values
    ref_cum = asc.softmax(-1).cumsum(-1)  # the reference's own values
    pos = 3000 - 1 - torch.arange(32) % 12  # a position among the top dozen: inside the candidates
    thr = ref_cum.gather(1, pos[:, None])
    p = 1 - thr.double()[:, 0]
    assert torch.equal((1 - p[:, None]).to(dtype), thr)
    assert torch.equal(top_p(x, p, candidates=64), top_p(x, p, candidates=0))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
def test_mirostat_v2_candidates_equal_full_sort(dtype):
    from decodebench.decoding.transforms.llamacpp import mirostat_v2
    from decodebench.decoding.transforms.sortfree import mirostat_v2_kept

    answered = 0
    for label, x in _cases(dtype):
        g = torch.Generator().manual_seed(len(label))
        mu = torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 12
        for k in (16, 128):
            assert torch.equal(mirostat_v2(x, mu, candidates=k), mirostat_v2(x, mu, candidates=0)), (label, k)
            om = torch.float64 if dtype == torch.float64 else torch.float32
            answered += int(mirostat_v2_kept(x, mu[:, None].to(om), k)[1].sum())
    assert answered > 100


def test_docstring_example():
    import doctest

    from decodebench.decoding.transforms import sortfree

    result = doctest.testmod(sortfree, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_race_over_candidates_draws_the_full_race_token():
    """After a sort-free top-p, the race over the candidates alone gives `sample`'s token on every ok row."""
    from decodebench.decoding.sampling import sample_candidates

    x = _peaked(48, 3000, torch.float32, seed=12)
    keys = row_keys(3, [str(i) for i in range(48)], [1] * 48)
    thr = torch.full((48, 1), 0.1, dtype=torch.float64).float()
    _, ok = top_p_cut(x, thr, torch.ones(48, 1, dtype=torch.long), 128)
    out = top_p(x, 0.9, candidates=128)
    ids = torch.topk(x, 128, dim=-1).indices
    assert ok.sum() > 24
    for step in (0, 7, torch.arange(48)):
        got = sample_candidates(out.gather(1, ids), ids, keys, step, x.shape[1])
        assert torch.equal(got[ok], sample(out, keys, step, True)[ok])


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
def test_xtc_candidates_equal_full_sort(dtype):
    from decodebench.decoding.transforms.llamacpp import xtc

    for label, x in _cases(dtype):
        g = torch.Generator().manual_seed(len(label))
        b = x.shape[0]
        t = torch.rand(b, generator=g) * 0.3
        prob, coin = torch.rand(b, generator=g), torch.rand(b, generator=g)
        mtk = torch.randint(1, 3, (b,), generator=g)
        for k in (16, 128):
            fast, slow = xtc(x, prob, t, coin, mtk, candidates=k), xtc(x, prob, t, coin, mtk, candidates=0)
            assert torch.equal(fast, slow), (label, k)
        assert (slow != x).any()  # some rows fired
