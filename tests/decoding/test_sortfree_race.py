"""The exponential race over a sort-free filter's candidates gives the full race's token.

Sort-free top-p offers its candidate set (`ids`, and `inside`: the rows whose kept set provably lies
within them); the chain hands it to `sample`, which races over those K tokens only on the `inside` rows
and over the whole row on the others. The noise is a function of (key, step, token id), so the token
must equal the full race's on every row, in every accepted dtype, on random, peaked and tied logits,
with greedy rows mixed in. Each case also checks the promise itself (no finite logit of an `inside` row
outside its ids) and that both kinds of rows occurred: a test where every row took one path would
prove nothing about the other.
"""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding import row_keys, sample
from decodebench.decoding.transforms.candidates import collect_offers
from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.params import SamplingParams
from decodebench.decoding.transforms.filters import top_p
from tests.decoding.test_sortfree import ALL_DTYPES, _cases, _peaked, _row_settings


def _offered(x, p, mtk, k):
    with collect_offers() as found:
        out = top_p(x, p, mtk, candidates=k)
    assert len(found) == 1  # one offer per call: the retry on failing rows offers nothing
    return out, found[0]


def _outside_ids(out: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`[B]`: does the row keep a finite logit at a token that is not among its ids?"""
    at_ids = torch.zeros_like(out, dtype=torch.bool).scatter_(1, ids, True)
    return (torch.isfinite(out) & ~at_ids).any(-1)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d)[6:])
def test_race_over_offered_candidates_equals_full_race(dtype):
    counts = {"inside": 0, "outside": 0}
    for label, x in _cases(dtype):
        b = x.shape[0]
        keys = row_keys(7, [str(i) for i in range(b)], [0] * b)
        mixed = torch.arange(b) % 3 != 0  # every third row greedy
        for k in (16, 64):
            p, mtk = _row_settings(b, seed=k)
            out, (ids, inside) = _offered(x, p, mtk, k)
            assert torch.equal(out, top_p(x, p, mtk, candidates=0)), (label, k)
            assert not _outside_ids(out, ids)[inside].any(), (label, k)
            counts["inside"] += int(inside.sum())
            counts["outside"] += int((~inside).sum())
            for step in (0, 5, torch.arange(b)):
                for do_sample in (True, mixed):
                    got = sample(out, keys, step, do_sample, candidates=(ids, inside))
                    assert torch.equal(got, sample(out, keys, step, do_sample)), (label, k, step)
    assert counts["inside"] > 50 and counts["outside"] > 10, counts


def test_top_p_off_rows_are_never_inside():
    """A row with top-p off keeps its whole vocabulary, so it is never handed over as `inside`."""
    x = _peaked(6, 2000, torch.float32, seed=3)
    p = torch.tensor([0.9, float("inf"), 0.5, float("inf"), 0.99, 0.7], dtype=torch.float64)
    out, (ids, inside) = _offered(x, p, torch.ones(6, dtype=torch.long), 64)
    assert inside.tolist()[1] is False and inside.tolist()[3] is False
    assert _outside_ids(out, ids).tolist()[1]


def _chain(rows, v):
    return LogitsChain.from_rows(rows, vocab_size=v, eos_token_id=None, device="cpu")


def _state(b):
    ids = torch.zeros(b, 1, dtype=torch.long)
    return DecodeState(input_ids=ids, attention_mask=torch.ones_like(ids), prompt_width=1, step=0)


def test_chain_hands_top_p_candidates_to_the_sampler():
    """At a vocabulary past the candidate threshold, a chain ending in top-p exposes its candidates, and
    the engine's call (`sample(..., candidates=chain.candidates)`) draws the full race's tokens."""
    b, v = 16, 8192
    x = _peaked(b, v, torch.float32, seed=9)
    x[-3:] = torch.randn(3, v) * 0.1  # near-flat rows: the nucleus is past the candidates
    rows = [SamplingParams(do_sample=True, top_p=0.9 if i % 4 else 0.5, temperature=0.8) for i in range(b)]
    chain = _chain(rows, v)
    out = chain(x, _state(b))
    assert chain.candidates is not None
    ids, inside = chain.candidates
    assert inside[:-3].any() and not inside[-3:].any()
    keys = row_keys(1, [str(i) for i in range(b)], [0] * b)
    got = sample(out, keys, 3, chain.sample_mode, candidates=chain.candidates)
    assert torch.equal(got, sample(out, keys, 3, chain.sample_mode))


def test_no_candidates_when_another_transform_follows_top_p():
    """Only the last transform's offer holds (a later one could change which logits are finite)."""
    b, v = 4, 8192
    rows = [SamplingParams(do_sample=True, top_p=0.9, min_p=0.05) for _ in range(b)]
    chain = _chain(rows, v)
    chain(_peaked(b, v, torch.float32, seed=1), _state(b))
    assert chain.names[-1] == "min_p" and chain.candidates is None
    plain = _chain([SamplingParams(do_sample=True, temperature=0.7) for _ in range(b)], v)
    plain(_peaked(b, v, torch.float32, seed=1), _state(b))
    assert plain.candidates is None


def _kept_rows(dtype, v=8192, seed=0):
    """Rows keeping 1, 7, 255 (tier 1's edge), 256, 300, 1023, 1024, 5000 tokens and the whole row, with
    ties at the cut in some; plus rows of one prompt sharing a key."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, v, generator=g, dtype=torch.float32) * 2
    x[3, :400] = 1.5  # ties across tier 1's edge
    x[9, 100:2000] = 0.25  # ties across tier 2's edge
    kept = [1, 7, 255, 256, 300, 1023, 1024, 1025, 5000, 1500, v, 2]
    out = torch.full_like(x, float("-inf"))
    for i, k in enumerate(kept):
        top = torch.topk(x[i], k).indices
        out[i, top] = x[i, top]
    return out.to(dtype), kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_probe_draws_the_full_races_token_at_every_tier(dtype):
    """`probe=True` (a truncating chain, no bound known): rows found by the top-256 and top-1024 probes race
    over those tokens, the rest over the whole row; every token equals the full race's, at every step."""
    x, kept = _kept_rows(dtype)
    keys = row_keys(7, [str(i % 5) for i in range(len(kept))], [0] * len(kept))
    mixed = torch.tensor([True] * 10 + [False, True])
    for step in range(6):
        for mode in (True, mixed):
            full = sample(x, keys, step, mode)
            assert torch.equal(sample(x, keys, step, mode, probe=True), full), (step, mode)


def test_the_probe_races_each_row_over_the_fewest_tokens_it_can(monkeypatch):
    """Tier 1 covers the rows keeping < 256 tokens, tier 2 those keeping < 1024, and only the others (and
    not greedy rows) race over the whole row."""
    import decodebench.decoding.sampling as sampling

    x, kept = _kept_rows(torch.float32)
    keys = row_keys(7, [str(i) for i in range(len(kept))], [0] * len(kept))
    probed, full_rows = [], []
    orig_topk, orig_race = torch.topk, sampling._race_scores
    monkeypatch.setattr(sampling.torch, "topk", lambda t, k, **kw: probed.append((t.shape[0], k)) or orig_topk(t, k, **kw))
    monkeypatch.setattr(sampling, "_race_scores", lambda lg, b: full_rows.append(lg.shape[0]) or orig_race(lg, b))
    mixed = torch.tensor([True] * 10 + [False, True])
    sample(x, keys, 0, mixed, probe=True)
    sampled = [k for i, k in enumerate(kept) if i != 10]  # row 10 is greedy: its draw is never used
    assert probed == [(12, 256), (sum(k >= 256 for k in sampled), 1024)] == [(12, 256), (7, 1024)]
    # two races over the tiers' candidates, then one over the whole rows of those keeping >= 1024 tokens
    assert full_rows == [12, 7, sum(k >= 1024 for k in sampled)] == [12, 7, 4]


def test_only_truncating_chains_ask_for_the_probe():
    rows = lambda **kw: [SamplingParams(do_sample=True, **kw)] * 2  # noqa: E731
    assert LogitsChain.from_rows(rows(min_p=0.1), vocab_size=50, eos_token_id=0, device="cpu").truncates
    assert LogitsChain.from_rows(rows(eta_cutoff=0.01), vocab_size=50, eos_token_id=0, device="cpu").truncates
    assert not LogitsChain.from_rows(rows(temperature=0.7, repetition_penalty=1.2), vocab_size=50,
                                     eos_token_id=0, device="cpu").truncates
