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
