"""Property-based tests of the filtering transforms and the sampler (Hypothesis).

Random small batches with `-inf`, exact ties and huge values, in every dtype, with per-row settings.
Invariants: a row with a finite logit keeps at least one token; no NaN appears; the kept tokens'
probabilities sum to 1; the kept set grows with top_p (and shrinks as min_p grows); the sort-free path
equals the full-sort reference; the sampled token is a kept one, and the same for an int or a tensor
step. Example counts are kept small so the whole file runs in well under a minute.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decodebench.decoding import row_keys, sample
from decodebench.decoding.transforms import filters as W
from decodebench.decoding.transforms import llamacpp as L
from decodebench.decoding.sampling import uniform_bits

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_HUGE = {torch.float32: 1e30, torch.float64: 1e300, torch.bfloat16: 1e30, torch.float16: 6e4}


@st.composite
def logits_batches(draw, min_v: int = 3, max_v: int = 60):
    """`[B, V]` logits: values from a mix of a small grid (ties), normal draws, huge values and -inf;
    every row keeps at least one finite entry."""
    dtype = draw(st.sampled_from(DTYPES))
    b, v = draw(st.integers(1, 4)), draw(st.integers(min_v, max_v))
    huge = _HUGE[dtype]
    value = st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]), st.floats(-20, 20),
                      st.sampled_from([huge, -huge, huge / 2, -math.inf]))
    rows = [draw(st.lists(value, min_size=v, max_size=v)) for _ in range(b)]
    x = torch.tensor(rows, dtype=torch.float64)
    x[:, 0] = torch.where(torch.isinf(x[:, 0]), 0.0, x[:, 0])  # one finite entry per row
    return x.to(dtype)


def _rows(draw, b: int, lo: float, hi: float) -> torch.Tensor:
    return torch.tensor(draw(st.lists(st.floats(lo, hi), min_size=b, max_size=b)), dtype=torch.float64)


def _check_distribution(out: torch.Tensor, x: torch.Tensor) -> None:
    assert not out.isnan().any()
    kept = out != -math.inf
    assert kept.any(dim=-1).all()  # at least one token per row
    assert not (kept & (x == -math.inf)).any()  # nothing comes back from -inf
    probs = out.double().softmax(dim=-1)
    finite_max = out.double().amax(-1) < math.inf
    assert torch.allclose(probs.sum(-1)[finite_max], torch.ones(int(finite_max.sum()), dtype=torch.float64))


@SETTINGS
@given(x=logits_batches(), data=st.data())
def test_top_p_invariants_and_fast_path(x, data):
    b, v = x.shape
    p = _rows(data.draw, b, 0.01, 1.0)
    mtk = torch.tensor(data.draw(st.lists(st.integers(1, 3), min_size=b, max_size=b)))
    k = data.draw(st.integers(1, max(1, v // 2 - 1)))
    slow = W.top_p(x, p, mtk, candidates=0)
    fast = W.top_p(x, p, mtk, candidates=k)
    assert torch.equal(fast, slow)
    _check_distribution(fast, x)
    assert ((fast != -math.inf).sum(-1) >= torch.clamp(mtk, max=(x != -math.inf).sum(-1))).all()
    wider = W.top_p(x, torch.clamp(p + 0.2, max=1.0), mtk, candidates=k)
    assert ((fast != -math.inf) <= (wider != -math.inf)).all()  # the kept set grows with p


@SETTINGS
@given(x=logits_batches(), data=st.data())
def test_min_p_invariants(x, data):
    m = _rows(data.draw, x.shape[0], 0.0, 1.0)
    out = W.min_p(x, m)
    _check_distribution(out, x)
    tighter = W.min_p(x, torch.clamp(m + 0.2, max=1.0))
    assert ((tighter != -math.inf) <= (out != -math.inf)).all()  # fewer kept as min_p grows


@SETTINGS
@given(x=logits_batches(), data=st.data())
def test_cutoff_filters_invariants(x, data):
    b = x.shape[0]
    _check_distribution(W.typical(x, _rows(data.draw, b, 0.01, 1.0)), x)
    _check_distribution(W.epsilon(x, _rows(data.draw, b, 0.0, 0.5)), x)
    _check_distribution(W.eta(x, _rows(data.draw, b, 0.0, 0.5)), x)
    _check_distribution(L.top_n_sigma(x, _rows(data.draw, b, 0.0, 3.0)), x)
    _check_distribution(L.tail_free(x, _rows(data.draw, b, 0.0, 1.0)), x)
    mu = _rows(data.draw, b, 0.0, 10.0)
    fast = L.mirostat_v2(x, mu, candidates=data.draw(st.integers(1, max(1, x.shape[1] // 2 - 1))))
    assert torch.equal(fast, L.mirostat_v2(x, mu, candidates=0))
    _check_distribution(fast, x)
    t, coin = _rows(data.draw, b, 0.0, 0.5).float(), torch.zeros(b)
    k = data.draw(st.integers(1, max(1, x.shape[1] // 2 - 1)))
    assert torch.equal(L.xtc(x, 1.0, t, coin, candidates=k), L.xtc(x, 1.0, t, coin, candidates=0))


@SETTINGS
@given(x=logits_batches(), data=st.data())
def test_sampled_token_is_kept_and_step_form_does_not_matter(x, data):
    b = x.shape[0]
    out = W.top_p(x, _rows(data.draw, b, 0.01, 1.0), candidates=data.draw(st.integers(0, 8)))
    keys = row_keys(data.draw(st.integers(0, 2**31)), [str(i) for i in range(b)], [0] * b)
    step = data.draw(st.integers(0, 10_000))
    tokens = sample(out, keys, step, True)
    assert (out.gather(1, tokens[:, None]) != -math.inf).all()
    assert torch.equal(tokens, sample(out, keys, torch.full((b,), step), True))
    assert torch.equal(uniform_bits(keys, step, x.shape[1]), uniform_bits(keys, torch.tensor(step), x.shape[1]))
