"""A user transform registered by decorator runs by name: in order lists, SamplingParams.extra, process_logits."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding import (
    TRANSFORMS,
    DecodeState,
    LogitsChain,
    SamplingParams,
    process_logits,
    register_transform,
    top_k,
)

from .helpers import make_logits


@register_transform("top_a_test", params=("top_a_test",), neutral=(0.0,))
def top_a(logits: torch.Tensor, top_a_test: torch.Tensor) -> torch.Tensor:
    """Top-a: keep tokens with prob >= a * max_prob ** 2."""
    probs = logits.softmax(-1)
    cut = top_a_test[:, None] * probs.amax(-1, keepdim=True) ** 2
    return logits.masked_fill(probs < cut, float("-inf"))


@register_transform("shift_test", params=("shift_test",), warper=False, needs_state=True)
def shift(logits: torch.Tensor, shift_test: torch.Tensor, state: DecodeState) -> torch.Tensor:
    """Adds `shift * step` to every logit: checks params and state arrive, greedy rows included."""
    return logits + shift_test[:, None] * state.step


def test_registered_and_used_by_name():
    assert "top_a_test" in TRANSFORMS and TRANSFORMS.get("top_a_test").user
    x = make_logits(3, 50, torch.float32, seed=1)
    out, names = process_logits(x, top_k=10, top_a_test=0.5, return_chain=True)
    assert names == ["top_k", "top_a_test"]  # named orders run user transforms after the built-ins
    assert torch.equal(out, top_a(top_k(x, 10), torch.full((3,), 0.5)))
    out, names = process_logits(x, order=["top_a_test", "top_k"], top_k=10, top_a_test=0.5, return_chain=True)
    assert names == ["top_a_test", "top_k"] and torch.equal(out, top_k(top_a(x, torch.full((3,), 0.5)), 10))


def test_per_row_params_through_sampling_params():
    rows = [SamplingParams(do_sample=True, extra={"top_a_test": 0.9}), SamplingParams(do_sample=True),
            SamplingParams(extra={"top_a_test": 0.9, "shift_test": 2.0})]  # greedy: warper off, shift on
    chain = LogitsChain.from_rows(rows, vocab_size=50, eos_token_id=None, device="cpu")
    assert chain.names == ["top_a_test", "shift_test"]
    x = make_logits(3, 50, torch.float64, seed=2)
    state = DecodeState(torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long), 2, 2)
    out = chain(x, state)
    assert torch.equal(out[0], top_a(x[:1], torch.tensor([0.9], dtype=torch.float64))[0])
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2] + 4.0)


def test_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_transform("top_a_test", params=("other_param",))(top_a)
    with pytest.raises(ValueError, match="already taken"):
        register_transform("another", params=("top_p",))(top_a)
    with pytest.raises(ValueError, match="did you mean 'top_a_test'"):
        LogitsChain.from_rows([SamplingParams(extra={"top_a_tst": 1.0})], vocab_size=5, eos_token_id=None, device="cpu")
    with pytest.raises(ValueError, match="leaves it out; add 'top_a_test'"):
        process_logits(make_logits(1, 5), order=["top_k"], top_k=2, top_a_test=0.5)
