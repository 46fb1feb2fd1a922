"""Top-H, sequence bias, multi-token bans, prefix constraints, CFG and watermarks against transformers'
processors; quadratic smoothing against text-generation-webui's formula; fp32, bf16 and fp16, mixed batches."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from decodebench.decoding import SamplingParams, cfg_combine, process_logits, smoothing, top_h
from decodebench.decoding.transforms.constraints import register_prefix_fn

from .helpers import DTYPES, logit_cases, make_logits

CASES = [c for c in logit_cases() if "float64" not in c[0]]
IDS = torch.zeros(6, 1, dtype=torch.long)


def _same(ours, theirs):
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_top_h(label, x):
    for h in (0.1, 0.4, 0.8, 1.0):
        _same(top_h(x, h), hf.TopHLogitsWarper(h)(IDS, x))
    hs = torch.tensor([0.1, 0.4, 0.8, 1.0, 0.25, 0.6], dtype=torch.float64)  # per row, as each row alone
    out = top_h(x, hs)
    for i in range(6):
        _same(out[i : i + 1], hf.TopHLogitsWarper(float(hs[i]))(IDS[:1], x[i : i + 1]))


def webui_quadratic(scores: torch.Tensor, factor: float, curve: float) -> torch.Tensor:
    """text-generation-webui's QuadraticSamplingLogitsWarper on one row (its batch is one row)."""
    max_logit = scores.max()
    diff = scores - max_logit
    k, s = (3 - curve) / 2, (curve - 1) / 2
    return torch.where(scores != float("-inf"), -(k * factor * diff**2) + (s * factor * diff**3) + max_logit, scores)


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_smoothing(label, x):
    f, c = [0.0, 0.2, 0.5, 1.0, 2.3, 0.33], [1.0, 1.0, 2.0, 3.0, 1.5, 4.0]
    out = smoothing(x, torch.tensor(f, dtype=torch.float64), torch.tensor(c, dtype=torch.float64))
    for i in range(6):
        want = x[i] if f[i] == 0 else webui_quadratic(x[i], f[i], c[i])
        _same(out[i], want)


SEQS = [[[3], 1.5], [[1, 2], -2.0], [[2, 4], 0.75], [[1, 2, 4], 3.0], [[4, 4], -1.0], [[2, 3], 0.5]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequence_bias_and_multi_token_bans(dtype):
    v = 8
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 5, (6, 9), generator=g)
    ids[0, -2:] = torch.tensor([1, 2])
    ids[1, -1] = 2
    ids[2, -1:] = 4
    x = make_logits(6, v, dtype, seed=6)
    out = process_logits(x, ids, sequence_bias=SEQS)
    _same(out, hf.SequenceBiasLogitsProcessor(SEQS)(ids, x))
    bans = [[1, 2], [2, 4], [3], [4, 4, 4], [7]]
    out = process_logits(x, ids, bad_words_ids=bans, eos_token_id=7)
    _same(out, hf.NoBadWordsLogitsProcessor(bans, eos_token_id=7)(ids, x))
    assert out.isinf().any() and not out[:, 7].isinf().any()  # EOS alone is never banned, as in HF


def test_sequence_bias_per_row_and_padding_never_matches():
    v = 6
    x = make_logits(3, v, torch.float32, seed=7)
    rows = [SamplingParams(sequence_bias=[[[1, 2], 2.0]]), SamplingParams(), SamplingParams(sequence_bias=[[[5, 5, 3], 1.0]])]
    from decodebench.decoding import DecodeState, LogitsChain

    chain = LogitsChain.from_rows(rows, vocab_size=v, eos_token_id=None, device="cpu")
    ids = torch.tensor([[0, 1], [1, 1], [5, 5]])  # row 2: "5 5" but its first 5 is padding
    mask = torch.tensor([[1, 1], [1, 1], [0, 1]])
    out = chain(x, DecodeState(ids, mask, 2, 0))
    assert out[0, 2] == x[0, 2] + 2.0 and torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])


@register_prefix_fn("even_then_odd")
def even_then_odd(batch_id, input_ids):
    return list(range(0, 10, 2)) if int(input_ids[-1]) % 2 else list(range(1, 10, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefix_allowed_tokens_fn(dtype):
    x = make_logits(4, 10, dtype, seed=8, neg_inf=0.3)
    ids = torch.tensor([[1, 3], [2, 2], [5, 7], [0, 4]])
    out = process_logits(x, ids, prefix_allowed_tokens_fn="even_then_odd")
    _same(out, hf.PrefixConstrainedLogitsProcessor(even_then_odd, 1)(ids, x))
    with pytest.raises(ValueError, match="unknown prefix_allowed_tokens_fn 'even_odd'"):
        SamplingParams(prefix_allowed_tokens_fn="even_odd")


class _FixedModel(torch.nn.Module):
    """Returns preset unconditional logits, so HF's processor and ours see the same (cond, uncond) pair."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None, use_cache=True, cache=None):
        return {"logits": self.logits[:, None, :], "cache": None}


class _Out(dict):
    @property
    def logits(self):
        return self["logits"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cfg_combine_equals_hf_on_the_same_pairs(dtype):
    cond, uncond = make_logits(4, 50, dtype, seed=9), make_logits(4, 50, dtype, seed=10)
    for scale in (1.0, 1.5, 3.0, 0.0):
        model = _FixedModel(uncond)
        model.forward = lambda *a, _m=model, **k: _Out(_FixedModel.forward(_m, *a, **k))  # noqa: E731
        ref = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model)(torch.zeros(4, 3, dtype=torch.long), cond)
        _same(cfg_combine(cond, uncond, scale), ref)
    scales = torch.tensor([1.0, 1.5, 3.0, 0.5], dtype=torch.float64)  # per row
    out = cfg_combine(cond, uncond, scales)
    for i in range(4):
        _same(out[i : i + 1], cfg_combine(cond[i : i + 1], uncond[i : i + 1], float(scales[i])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_hf_order_chain_equals_hf_processor_list(dtype):
    """The new HF transforms in one chain, in HF's order, give what HF's processor list gives."""
    v = 120
    x = make_logits(3, v, dtype, seed=11)
    ids = torch.randint(0, v, (3, 7), generator=torch.Generator().manual_seed(12))
    seqs = [[[int(ids[0, -1]), 5], 2.0], [[9], -1.0]]
    bans = [[int(ids[1, -1]), 6], [8]]
    procs = [hf.SequenceBiasLogitsProcessor(seqs), hf.RepetitionPenaltyLogitsProcessor(1.3),
             hf.NoBadWordsLogitsProcessor(bans, eos_token_id=0), hf.TemperatureLogitsWarper(0.8),
             hf.TopHLogitsWarper(0.6), hf.TopKLogitsWarper(40), hf.TopPLogitsWarper(0.9), hf.MinPLogitsWarper(0.02),
             hf.WatermarkLogitsProcessor(v, "cpu", bias=1.5)]
    ref = x
    for p in procs:
        ref = p(ids, ref)
    out = process_logits(x, ids, sequence_bias=seqs, repetition_penalty=1.3, bad_words_ids=bans, eos_token_id=0,
                         temperature=0.8, top_h=0.6, top_k=40, top_p=0.9, min_p=0.02, watermark=True,
                         watermark_delta=1.5)
    _same(out, ref)
