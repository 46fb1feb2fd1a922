"""History-dependent transforms against Hugging Face's processors; padding never counts."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from decodebench.decoding.transforms.penalties import (
    ban_tokens,
    frequency_penalty,
    logit_bias,
    min_new_tokens,
    no_repeat_ngram,
    presence_penalty,
    repetition_penalty,
    token_counts,
)

from .helpers import DTYPES, make_logits

V = 12  # a small vocabulary, so that histories repeat tokens and n-grams


def _ids(b: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (b, t), generator=g)  # only 5 distinct tokens: many repeats


def _left_pad(rows: list[torch.Tensor], pad: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, t - len(r) :], mask[i, t - len(r) :] = r, 1
    return ids, mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty(dtype):
    x = make_logits(4, V, dtype, seed=1, neg_inf=0.2)
    ids = _ids(4, 9, seed=2)
    for pen in (0.5, 1.0, 1.2, 3.0):
        ref = hf.RepetitionPenaltyLogitsProcessor(pen)(ids, x.clone())
        assert torch.equal(repetition_penalty(x, pen, ids), ref)


def test_repetition_penalty_on_an_empty_history_changes_nothing():
    for dtype in DTYPES:
        x = make_logits(2, V, dtype, seed=3)
        out = repetition_penalty(x, torch.tensor([2.0, 0.5]), torch.zeros(2, 0, dtype=torch.long))
        assert torch.equal(out, hf.RepetitionPenaltyLogitsProcessor(2.0)(torch.zeros(2, 0, dtype=torch.long), x.clone()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty_rows_with_no_history_are_unchanged(dtype):
    x = make_logits(2, V, dtype, seed=3)
    out = repetition_penalty(x, 2.0, torch.tensor([[-1, -1, -1], [3, -1, 3]]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], hf.RepetitionPenaltyLogitsProcessor(2.0)(
        torch.tensor([[3, 3]]), x[1:].clone())[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty_ignores_padding_and_per_row_values(dtype):
    x = make_logits(3, V, dtype, seed=4)
    rows = [torch.tensor([1, 2, 2]), torch.tensor([3, 1, 4, 4, 0]), torch.tensor([5])]
    ids, mask = _left_pad(rows)  # the pad id (7) must not be penalised
    pens = torch.tensor([1.5, 1.0, 0.7], dtype=torch.float64)
    out = repetition_penalty(x, pens, ids.masked_fill(mask == 0, -1))
    for i, r in enumerate(rows):
        ref = hf.RepetitionPenaltyLogitsProcessor(float(pens[i]))(r[None], x[i : i + 1].clone())
        assert torch.equal(out[i : i + 1], ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty_generated_only_matches_hf_prompt_ignore_length(dtype):
    x = make_logits(2, V, dtype, seed=5)
    ids = _ids(2, 8, seed=6)
    ref = hf.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=5)(ids, x.clone())
    assert torch.equal(repetition_penalty(x, 1.3, torch.cat([torch.full((2, 5), -1), ids[:, 5:]], 1)), ref)


@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
def test_presence_and_frequency_follow_openai_formula(dtype):
    x = make_logits(2, V, dtype, seed=7)
    ids = torch.tensor([[1, 1, 1, 2], [3, 3, 0, 0]])
    counts = token_counts(ids, V)
    assert counts[0, 1] == 3 and counts[1, 0] == 2 and counts.sum() == 8
    f, p = torch.tensor([0.5, 0.0], dtype=torch.float64), torch.tensor([0.25, 1.0], dtype=torch.float64)
    out = presence_penalty(frequency_penalty(x, f, counts), p, counts)
    # each step in float32 (float64 for float64 logits), rounded once per step, as `x - 0.5 * c` is
    wide = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    step1 = (wide - f[:, None].to(wide.dtype) * counts).to(dtype)
    want = (step1.to(wide.dtype) - p[:, None].to(wide.dtype) * (counts > 0)).to(dtype)
    assert torch.equal(out, want)
    if dtype == torch.float64:
        assert out[0, 1] == x[0, 1] - 1.5 - 0.25 and out[1, 3] == x[1, 3] - 1.0


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_repeat_ngram(n, dtype):
    x = make_logits(5, V, dtype, seed=8)
    ids = _ids(5, 14, seed=9)
    ref = hf.NoRepeatNGramLogitsProcessor(n)(ids, x.clone())
    assert torch.equal(no_repeat_ngram(x, ids, n), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_repeat_ngram_padded_per_row(dtype):
    x = make_logits(4, V, dtype, seed=10)
    rows = [torch.tensor([1, 2, 1, 2, 1]), torch.tensor([3, 3]), torch.tensor([4, 0, 4, 0, 4, 0, 4]),
            torch.tensor([2, 2, 2])]
    ids, mask = _left_pad(rows, pad=2)  # a pad id that also occurs for real: it must still not count
    sizes = torch.tensor([2, 3, 0, 2])
    out = no_repeat_ngram(x, ids, sizes, mask)
    for i, r in enumerate(rows):
        ref = x[i : i + 1] if sizes[i] == 0 else hf.NoRepeatNGramLogitsProcessor(int(sizes[i]))(r[None], x[i : i + 1])
        assert torch.equal(out[i : i + 1], ref), i


@pytest.mark.parametrize("dtype", DTYPES)
def test_min_new_tokens(dtype):
    x = make_logits(3, V, dtype, seed=11)
    ids = _ids(3, 6, seed=12)
    for prompt_len, need in ((6, 2), (4, 2), (3, 3), (2, 3)):
        ref = hf.MinNewTokensLengthLogitsProcessor(prompt_len, need, [3, 9])(ids, x)
        assert torch.equal(min_new_tokens(x, need, 6 - prompt_len, [3, 9]), ref)
    per_row = min_new_tokens(x, torch.tensor([0, 5, 1]), 1, 3)
    assert per_row[1, 3] == float("-inf") and per_row[0, 3] == x[0, 3] and per_row[2, 3] == x[2, 3]


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_bias_and_bans(dtype):
    x = make_logits(3, V, dtype, seed=13, neg_inf=0.2)
    ids = _ids(3, 4, seed=14)
    bias = {1: 0.1, 4: -2.5, 7: 3.3}
    ref = hf.SequenceBiasLogitsProcessor([[[t], b] for t, b in bias.items()])(ids, x)
    assert torch.equal(logit_bias(x, list(bias), list(bias.values())), ref)
    ref = hf.NoBadWordsLogitsProcessor([[2], [5], [9]], eos_token_id=9)(ids, x)  # HF never bans EOS
    assert torch.equal(ban_tokens(x, [2, 5]), ref)


def test_sparse_rows_pad_with_minus_one():
    x = torch.zeros(2, 5)
    out = logit_bias(x, torch.tensor([[1, -1], [2, 3]]), torch.tensor([[1.0, 9.0], [2.0, 3.0]]))
    assert out.tolist() == [[0, 1, 0, 0, 0], [0, 0, 2, 3, 0]]
    out = ban_tokens(x, torch.tensor([[4, -1], [-1, -1]]))
    assert out[0, 4] == float("-inf") and torch.isfinite(out).sum() == 9
