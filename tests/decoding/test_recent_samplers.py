"""p-less, p-less-norm and min-k against their references on shared logits, in fp32, bf16 and fp16.

References, ported here as a few lines each (never imported):
- p-less / p-less-norm: the authors' `p_less_decode` / `p_less_norm_decode` (github ryttry/p-less-sampling,
  `p_less_samplers.py`, read from its mirror CreateTao/p-less), the truncation part (their last line samples);
  and llama.cpp's `test_p_less` vectors (tests/test-sampling.cpp, PR 26035).
- min-k: the paper's Algorithm 1 as written in vLLM's Min-k test (`_reference_k`), and vLLM's
  `MinKLogitsProcessor.apply` (its tensor arithmetic); the authors' repository (YecanLee/Mink) was not available.
The statistics of both methods run in float32, so on bf16/fp16 logits the reference runs on `logits.float()`.
"""

from __future__ import annotations

import importlib
import doctest
import math

import pytest
import torch

import decodebench.decoding as decoding
from decodebench.decoding import SamplingParams, min_k, p_less, p_less_norm, process_logits

from .helpers import DTYPES, make_logits


# ----------------------------------------------------------------------------------------- references
def authors_p_less_keep(probs: torch.Tensor) -> torch.Tensor:
    """ryttry/p-less-sampling `p_less_decode`: `p = probs.square().sum(-1, keepdim=True); mask = probs < p`."""
    p = probs.square().sum(dim=-1, keepdim=True)
    return ~(probs < p)


def authors_p_less_norm_keep(probs: torch.Tensor) -> torch.Tensor:
    """ryttry/p-less-sampling `p_less_norm_decode`: `p = (v * sum(probs ** 2) - 1) / (v - 1); mask = probs < p`."""
    v = probs.size(-1)
    p = (v * probs.square().sum(dim=-1, keepdim=True) - 1.0) / (v - 1.0)
    return ~(probs < p)


def algorithm1_k(row: torch.Tensor, tau: float, eps: float = 1e-8) -> int:
    """Min-k's Algorithm 1 on one all-finite row (vLLM's tests/.../test_min_k `_reference_k`, Apache-2.0)."""
    sorted_logits, _ = torch.sort(row, descending=True)
    logit_range = (sorted_logits[0] - sorted_logits[-1]).item()
    best_decay, best_i = -1.0, 1
    for i in range(1, sorted_logits.numel()):
        decay = (sorted_logits[i - 1] - sorted_logits[i]).item() / (i * (logit_range + eps))
        if decay > best_decay:
            best_decay, best_i = decay, i
    return max(best_i, int(max(0.0, tau) / (logit_range + eps)))


def vllm_min_k(logits: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """vLLM's `MinKLogitsProcessor.apply` on all-finite rows (every row enabled), Apache-2.0."""
    vocab_size = logits.shape[-1]
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    logit_range = sorted_logits[:, :1] - sorted_logits[:, -1:] + 1e-8
    drops = sorted_logits[:, :-1] - sorted_logits[:, 1:]
    positions = torch.arange(1, vocab_size, device=logits.device, dtype=logits.dtype)
    k_cliff = (drops / logit_range / positions).argmax(dim=-1) + 1
    k_fallback = torch.floor(tau.clamp(min=0.0) / logit_range.squeeze(1)).long()
    k = torch.maximum(k_cliff, k_fallback).clamp_(1, vocab_size)
    kth_value = sorted_logits.gather(1, (k - 1).unsqueeze(1))
    return logits.masked_fill(logits < kth_value, -float("inf"))


def _kept(x: torch.Tensor) -> torch.Tensor:
    return ~torch.isinf(x)


def _logits(probs, dtype=torch.float32):
    return torch.log(torch.tensor([probs], dtype=torch.float64)).to(dtype)


# ------------------------------------------------------------------------------------------- p-less
def test_p_less_llamacpp_vectors():
    # threshold 0.225 keeps 0.25 and 0.30, renormalised to 0.4545 and 0.5455 (llama.cpp test_p_less)
    out = process_logits(_logits([0.1, 0.15, 0.2, 0.25, 0.3]), p_less=True)
    got = out.double().softmax(-1)[0].tolist()
    assert got[:3] == [0.0, 0.0, 0.0]
    assert math.isclose(got[3], 0.45454545, abs_tol=1e-5) and math.isclose(got[4], 0.54545455, abs_tol=1e-5)
    # uniform: threshold 0.2, every token kept
    uniform = _logits([0.2] * 5)
    for fn in (p_less, p_less_norm):
        assert torch.equal(fn(uniform), uniform)


def test_authors_code_drops_a_uniform_row_in_float32_and_the_cap_keeps_it():
    """The one place we leave the authors' code: their float32 sum of squares rounds above 0.2 on a uniform row."""
    probs = _logits([0.2] * 5).softmax(-1)
    assert not authors_p_less_keep(probs).any()  # the authors' code would keep nothing, then divide by zero
    assert _kept(p_less(_logits([0.2] * 5))).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ties,neg_inf", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_p_less_and_norm_equal_the_authors_code(dtype, ties, neg_inf):
    x = make_logits(8, 500, dtype, seed=11, ties=ties, neg_inf=neg_inf)
    x[0] = x[0] * 0.01  # a nearly flat row: p-less-norm keeps almost everything
    probs = x.float().softmax(-1)
    for fn, ref in ((p_less, authors_p_less_keep), (p_less_norm, authors_p_less_norm_keep)):
        out = fn(x)
        assert out.dtype == dtype
        assert torch.equal(_kept(out), ref(probs) & _kept(x)), fn.__name__
        assert torch.equal(out[_kept(out)], x[_kept(out)])  # kept logits keep their values
    assert (_kept(p_less_norm(x)) >= _kept(p_less(x))).all()  # the norm variant keeps a superset


def test_p_less_per_row_switch_equals_each_row_alone():
    x = make_logits(5, 200, seed=3)
    on = torch.tensor([True, False, True, False, True])
    out = p_less(x, on)
    for i in range(5):
        want = p_less(x[i:i + 1]) if on[i] else x[i:i + 1]
        assert torch.equal(out[i:i + 1], want)
    rows = [SamplingParams(do_sample=True, p_less=True), SamplingParams(do_sample=True),
            SamplingParams(do_sample=True, p_less_norm=True), SamplingParams(do_sample=True, p_less=True,
                                                                            p_less_norm=True)]
    chain = decoding.LogitsChain.from_rows(rows, vocab_size=200, eos_token_id=None, device="cpu")
    state = decoding.DecodeState(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 0, dtype=torch.long), 0, 0)
    got = chain(x[:4], state)
    assert torch.equal(got[0], p_less(x[:1])[0]) and torch.equal(got[1], x[1])
    assert torch.equal(got[2], p_less_norm(x[2:3])[0])
    assert torch.equal(got[3], p_less_norm(p_less(x[3:4]))[0])  # both: p-less, then p-less-norm (the order)


@pytest.mark.parametrize("bad", [0.3, 1, "yes"])
def test_p_less_takes_no_threshold(bad):
    for name in ("p_less", "p_less_norm"):
        with pytest.raises(ValueError, match=f"{name} must be true or false \\(p-less takes no threshold"):
            SamplingParams(do_sample=True, **{name: bad})


# --------------------------------------------------------------------------------------------- min-k
def _cliff_logits(b: int, v: int, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, v, generator=g, dtype=torch.float64)
    for i in range(b):
        x[i, : 1 + i % 6] += 4.0 + i  # a head of 1..6 tokens, then a cliff into the tail
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tau", [0.0, 3.0, 1e4])
def test_min_k_equals_algorithm_1_and_the_vllm_port(dtype, tau):
    x = _cliff_logits(12, 256, dtype, seed=5)
    x[-1] = torch.linspace(0.0, 0.05, 256).to(dtype)  # near-flat: the fallback decides
    out = min_k(x, tau)
    assert out.dtype == dtype
    xf = x.float()
    for i in range(x.shape[0]):
        k = algorithm1_k(xf[i], tau)
        kth = torch.sort(xf[i], descending=True).values[min(k, 256) - 1]
        assert torch.equal(_kept(out[i]), xf[i] >= kth), (i, k)
        assert out[i].argmax() == x[i].argmax()
    assert torch.equal(_kept(out), _kept(vllm_min_k(xf, torch.full((12,), tau))))
    assert torch.equal(out[_kept(out)], x[_kept(out)])


def test_min_k_cut_does_not_change_with_temperature():
    x = _cliff_logits(10, 300, torch.float32, seed=8)
    # the function itself: the cliff is scale-invariant (tau 0 isolates it from the fallback)
    base = _kept(min_k(x, 0.0))
    for t in (0.25, 0.7, 3.0, 10.0):
        assert torch.equal(_kept(min_k(x / t, 0.0)), base), t
    # in the chain min-k reads the logits before temperature: the whole kept set, fallback included
    base = _kept(process_logits(x, min_k=True, min_k_tau=3.0))
    for t in (0.25, 0.7, 1.5, 3.0, 10.0):
        out, names = process_logits(x, min_k=True, min_k_tau=3.0, temperature=t, return_chain=True)
        assert names == ["min_k", "temperature"] and torch.equal(_kept(out), base), t


def test_min_k_reads_finite_logits_only():
    """Tokens an earlier transform removed take no part: equal to Algorithm 1 on the finite subset."""
    x = _cliff_logits(6, 200, torch.float32, seed=2)
    g = torch.Generator().manual_seed(9)
    x = x.masked_fill((torch.rand(6, 200, generator=g) < 0.4) & (torch.arange(200) > 10), float("-inf"))
    out = min_k(x, 3.0)
    for i in range(6):
        fin = x[i][torch.isfinite(x[i])]
        k = algorithm1_k(fin, 3.0)
        kth = torch.sort(fin, descending=True).values[min(k, fin.numel()) - 1]
        assert torch.equal(_kept(out[i]), x[i] >= kth), i
    one = torch.full((1, 50), float("-inf"))
    one[0, 7] = 1.0
    assert torch.equal(min_k(one, 3.0), one)  # a single candidate stays


def test_min_k_per_row_settings_equal_each_row_alone():
    x = _cliff_logits(4, 128, torch.float32, seed=4)
    x[3] = torch.linspace(0.0, 0.05, 128)
    rows = [SamplingParams(do_sample=True, min_k=True, min_k_tau=0.0), SamplingParams(do_sample=True),
            SamplingParams(do_sample=True, min_k=True), SamplingParams(do_sample=True, min_k=True, min_k_tau=5.0)]
    chain = decoding.LogitsChain.from_rows(rows, vocab_size=128, eos_token_id=None, device="cpu")
    state = decoding.DecodeState(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 0, dtype=torch.long), 0, 0)
    got = chain(x, state)
    for i, r in enumerate(rows):
        want = min_k(x[i:i + 1], r.min_k_tau) if r.min_k else x[i:i + 1]
        assert torch.equal(got[i:i + 1], want), i
    assert _kept(got[3]).sum() > 1  # the flat row's fallback: floor(5 / 0.05) tokens


@pytest.mark.parametrize("candidates", [2, 8, 64])
def test_min_k_candidate_path_equals_the_full_sort(candidates):
    """topk(candidates) with the exact per-row check, and the full sort for the rows it cannot settle."""
    x = torch.cat([_cliff_logits(8, 400, torch.float32, seed=6), make_logits(4, 400, seed=7, ties=True),
                   make_logits(4, 400, seed=8, neg_inf=0.95)])
    x[0] = torch.linspace(10.0, 9.0, 400)
    x[0, 100:] -= 60.0  # a cliff at rank 100, deeper than the candidates
    x[1] = torch.linspace(0.0, 0.05, 400)  # flat: the fallback keeps hundreds
    for tau in (0.0, 3.0, torch.tensor([0.0, 5.0] * 8)):
        assert torch.equal(min_k(x, tau, candidates=candidates), min_k(x, tau, candidates=0))
    assert _kept(min_k(x, 0.0))[0].sum() == 100


def test_min_k_tau_is_checked():
    with pytest.raises(ValueError, match="min_k_tau must be in"):
        SamplingParams(do_sample=True, min_k=True, min_k_tau=-1.0)


# -------------------------------------------------------------------------------------------- docs
@pytest.mark.parametrize("name", ["p_less", "min_k", "adaptive_p"])
def test_docstring_examples(name):
    module = importlib.import_module(f"decodebench.decoding.transforms.{name}")  # the package's functions shadow the modules
    names = {n: getattr(decoding, n) for n in decoding.__all__}
    result = doctest.testmod(module, extraglobs={"torch": torch, **names}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
