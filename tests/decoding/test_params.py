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
    ({"logit_bias": {-1: 2.0}}, "logit_bias: -1 is not a token id (an integer >= 0)"),
    ({"logit_bias": [(1, 2.0), (1, 3.0)]}, "logit_bias must be free of repeated token ids"),
    ({"bad_words_ids": [[1, 2], []]}, "bad_words_ids must be free of empty sequences"),
    ({"top_n_sigma": -0.5}, "top_n_sigma must be in [0, inf) (0 = off), got -0.5"),
    ({"xtc_probability": 1.5}, "xtc_probability must be in [0, 1] (0 = off), got 1.5"),
    ({"xtc_threshold": -0.1}, "xtc_threshold must be in [0, 1]"),
    ({"mirostat": 3}, "mirostat must be one of 0, 1, 2 (0 = off, 1 = v1, 2 = v2), got 3"),
    ({"mirostat_tau": 0.0}, "mirostat_tau must be in (0, inf)"),
    ({"guidance_scale": -1.0}, "guidance_scale must be in [0, inf) (1 = off), got -1.0"),
    ({"tfs_z": 0.0}, "tfs_z must be in (0, 1] (1 = off)"),
    ({"top_h": 1.5}, "top_h must be in (0, 1]"),
    ({"dry_base": 0.5}, "dry_base must be in [1, inf)"),
    ({"dry_penalty_last_n": -2}, "dry_penalty_last_n must be an integer >= -1"),
    ({"dry_sequence_breakers": ["\n", ""]}, "dry_sequence_breakers must be free of empty strings"),
    ({"smoothing_curve": 0.5}, "smoothing_curve must be in [1, inf)"),
    ({"watermark_gamma": 1.5}, "watermark_gamma must be in (0, 1), got 1.5"),
    ({"watermark_seeding_scheme": "hash"}, "watermark_seeding_scheme must be one of lefthash, selfhash"),
    ({"sequence_bias": [[[], 1.0]]}, "sequence_bias must be a list of [[token ids...], bias] pairs"),
    ({"grammar": {"json_schema": "{not json"}}, "grammar.json_schema is not valid JSON"),
    ({"grammar": {"yaml": "x"}}, "grammar must be {json_schema: ...}, {regex: ...} or {lark: ...}"),
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
    p = SamplingParams(logit_bias={5: 1, 2: -1.5}, bad_words_ids=[[3], 4, [5, 6]], order=["top_k", "top_p"],
                       extra={"b": 1, "a": 2}, sequence_bias=[[[2, 1], 0.5], [[4], -1]],
                       grammar={"json_schema": '{"type": "object"}'})
    assert p.logit_bias == ((2, -1.5), (5, 1.0)) and p.bad_words_ids == (3, 4, (5, 6))
    assert p.sequence_bias == (((2, 1), 0.5), ((4,), -1.0)) and p.grammar == ("json_schema", '{"type": "object"}')
    assert p.order == ("top_k", "top_p") and p.extra == (("a", 2.0), ("b", 1.0))
    assert hash(p) == hash(p.replace())
    assert p.replace(top_k=3).top_k == 3
    with pytest.raises(ValueError):
        p.replace(top_k=-3)


def test_greedy_flag():
    assert SamplingParams().greedy and SamplingParams(do_sample=True, temperature=0).greedy
    assert not SamplingParams(do_sample=True).greedy
    assert SamplingParams(top_p=1.0, top_k=0).top_p == 1.0  # edge values accepted, and off in a chain
