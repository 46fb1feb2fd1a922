"""SamplingParams: every field range-checked, with a one-line message naming the field and the fix."""

from __future__ import annotations

import pytest

from decodebench.decoding import SamplingParams

BAD = [
    ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
    ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
    ({"typical_p": 1.0}, "typical_p must be in (0, 1); use None to turn it off, got 1.0"),
    ({"epsilon_cutoff": 0.0}, "epsilon_cutoff must be in (0, 1)"),
    ({"eta_cutoff": 1.0}, "eta_cutoff must be in (0, 1)"),
    ({"min_p": -0.1}, "min_p must be in [0, 1], got -0.1"),
    ({"temperature": -1.0}, "temperature must be in [0, inf) (0 = greedy), got -1.0"),
    ({"temperature": float("nan")}, "temperature must be in [0, inf)"),
    ({"repetition_penalty": 0.0}, "repetition_penalty must be in (0, inf) (1 = off), got 0.0"),
    ({"presence_penalty": -0.5}, "presence_penalty must be in [0, inf), got -0.5"),
    ({"frequency_penalty": -1}, "frequency_penalty must be in [0, inf), got -1"),
    ({"top_k": -1}, "top_k must be an integer >= 0 (0 = off), got -1"),
    ({"top_k": 2.5}, "top_k must be an integer >= 0"),
    ({"top_k": True}, "top_k must be an integer >= 0"),
    ({"no_repeat_ngram_size": 0}, "no_repeat_ngram_size must be an integer >= 1, got 0"),
    ({"min_new_tokens": -2}, "min_new_tokens must be an integer >= 0, got -2"),
    ({"min_tokens_to_keep": 0}, "min_tokens_to_keep must be an integer >= 1, got 0"),
    ({"do_sample": 1}, "do_sample must be True or False, got 1"),
    ({"logit_bias": {-1: 2.0}}, "logit_bias token id must be an integer >= 0, got -1"),
    ({"logit_bias": [(1, 2.0), (1, 3.0)]}, "logit_bias must be free of repeated token ids"),
    ({"bad_words_ids": [[1, 2]]}, "multi-token bans are not supported"),
    ({"order": "hff"}, "unknown order 'hff'; did you mean 'hf'?"),
    ({"order": ("top_k", "temprature")}, "did you mean 'temperature'?"),
    ({"extra": {"x": "a"}}, "extra['x'] must be in (-inf, inf)"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_raise_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        SamplingParams(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_normalisation_keeps_it_hashable():
    p = SamplingParams(logit_bias={5: 1, 2: -1.5}, bad_words_ids=[[3], 4], order=["top_k", "top_p"],
                       extra={"b": 1, "a": 2})
    assert p.logit_bias == ((2, -1.5), (5, 1.0)) and p.bad_words_ids == (3, 4)
    assert p.order == ("top_k", "top_p") and p.extra == (("a", 2.0), ("b", 1.0))
    assert hash(p) == hash(p.replace())
    assert p.replace(top_k=3).top_k == 3
    with pytest.raises(ValueError):
        p.replace(top_k=-3)


def test_greedy_flag():
    assert SamplingParams().greedy and SamplingParams(do_sample=True, temperature=0).greedy
    assert not SamplingParams(do_sample=True).greedy
    assert SamplingParams(top_p=1.0, top_k=0).top_p == 1.0  # edge values accepted, and off in a chain
