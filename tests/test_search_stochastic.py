"""Stochastic beam search (Kool et al. 2019) against a slow reference: Python loops over beams and tokens,
full forwards without a cache, the Gumbel shift by its defining formula in float64, the same seeded noise."""

from __future__ import annotations

import math

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.sampling import row_keys
from decodebench.decoding.search.stochastic_beam import gumbel
from decodebench.decoding.search.spec import build_strategy
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


@torch.inference_mode()
def slow_sbs(model, prompt, pid, seed, k, n_new, eos):
    V = model.config.vocab_size
    beams = [dict(seq=[], phi=torch.tensor(0.0), G=0.0, alive=True)]  # the root
    for t in range(n_new):
        expansions = []
        for slot, b in enumerate(beams):
            if not b["alive"]:
                expansions.append(b)  # a finished sequence competes as itself
                continue
            logits = model(torch.tensor([prompt + b["seq"]])).logits[0, -1].float()
            lq = torch.log_softmax(torch.log_softmax(logits, -1), -1)
            g = (b["phi"] + lq) + gumbel(row_keys(seed, [pid], [slot]), t, V)[0]
            z = g.max().double()
            shifted = -torch.log(math.exp(-b["G"]) - torch.exp(-z) + torch.exp(-g.double()))
            for v in range(V):
                expansions.append(dict(seq=b["seq"] + [v], phi=b["phi"] + lq[v], G=shifted[v].item(), alive=v != eos))
        expansions.sort(key=lambda e: -e["G"])
        beams = expansions[:k]
        if not any(b["alive"] for b in beams):
            break
    return beams


def run(model, tok, texts, d, seed=0, batch_size=64, ids=None):
    spec = build_strategy({"name": "s", "method": "stochastic_beam", "do_sample": True, **d})
    ids = ids or [str(i) for i in range(len(texts))]
    reqs = [Request(prompt_id=pid, prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params, seed=seed)
            for pid, x in zip(ids, texts) for s in range(spec.num_return_sequences)]
    return generate(model, tok, reqs, spec, batch_size=batch_size)


@pytest.mark.parametrize("k,n,seed", [(4, 4, 0), (3, 2, 7), (6, 6, 1)])
def test_stochastic_beam_equals_slow_reference(k, n, seed):
    model, tok = peaky_tiny()
    texts = TEXTS[:3]
    outs, _ = run(model, tok, texts, dict(num_beams=k, num_return_sequences=n, max_new_tokens=8), seed=seed)
    got = iter(outs)
    for i, x in enumerate(texts):
        ref = slow_sbs(model, tok(x)["input_ids"], str(i), seed, k, 8, tok.eos_token_id)
        for b in ref[:n]:
            o = next(got)
            assert o.token_ids == b["seq"]
            assert o.score == pytest.approx(b["phi"].item(), rel=1e-5, abs=1e-5)
            assert o.extra["gumbel"] == pytest.approx(b["G"], rel=1e-4, abs=1e-4)
            assert o.finish_reason == ("eos" if b["seq"][-1] == tok.eos_token_id else "length")


@torch.inference_mode()
def test_samples_are_distinct_with_exact_logprobs():
    model, tok = peaky_tiny()
    outs, _ = run(model, tok, TEXTS, dict(num_beams=6, num_return_sequences=6, max_new_tokens=8))
    for i, x in enumerate(TEXTS):
        rows = outs[6 * i: 6 * (i + 1)]
        assert len({tuple(o.token_ids) for o in rows}) == 6
        assert rows[0].extra["gumbel"] == 0.0  # the best child always carries its parent's value; root = 0
        gs = [o.extra["gumbel"] for o in rows]
        assert gs == sorted(gs, reverse=True)
        prompt = tok(x)["input_ids"]
        for o in rows:
            lp = torch.log_softmax(model(torch.tensor([prompt + o.token_ids])).logits[0].float(), -1)
            exact = sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(o.token_ids))
            assert o.score == pytest.approx(exact, abs=1e-4)
            assert o.extra["logprob_model"] == pytest.approx(exact, abs=1e-4)


def test_samples_depend_only_on_seed_and_prompt():
    model, tok = peaky_tiny()
    d = dict(num_beams=4, num_return_sequences=4, max_new_tokens=8)
    together, _ = run(model, tok, TEXTS, d, seed=3)
    alone, _ = run(model, tok, [TEXTS[2]], d, seed=3, ids=["2"])
    assert [o.token_ids for o in alone] == [o.token_ids for o in together[8:12]]
    split, _ = run(model, tok, TEXTS, d, seed=3, batch_size=3)
    assert [o.token_ids for o in split] == [o.token_ids for o in together]
    other, _ = run(model, tok, TEXTS, d, seed=4)
    assert [o.token_ids for o in other] != [o.token_ids for o in together]


def test_first_sample_follows_the_model_distribution():
    """With one step, the top sample is a plain sample from q and the k samples are distinct tokens."""
    model, tok = peaky_tiny()
    n_seeds = 400
    spec = build_strategy({"name": "s", "method": "stochastic_beam", "do_sample": True, "num_beams": 3,
                           "num_return_sequences": 3, "max_new_tokens": 1})
    prompt = tok("The cat")["input_ids"]
    reqs = [Request(prompt_id="p", prompt_ids=prompt, sample_index=s, params=spec.params, seed=seed)
            for seed in range(n_seeds) for s in range(3)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=3 * n_seeds)
    with torch.inference_mode():
        p = model(torch.tensor([prompt])).logits[0, -1].float().softmax(-1)
    top = int(p.argmax())
    freq = sum(outs[3 * s].token_ids[0] == top for s in range(n_seeds)) / n_seeds
    sd = math.sqrt(p[top].item() * (1 - p[top].item()) / n_seeds)
    assert abs(freq - p[top].item()) < 4 * sd
    assert all(len({outs[3 * s + j].token_ids[0] for j in range(3)}) == 3 for s in range(n_seeds))
