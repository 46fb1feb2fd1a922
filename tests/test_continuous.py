"""Continuous batching and the static running batch: every request's tokens equal the request run alone,
whatever the batch size, the batching mode, the host-work interval or the column moves."""

from __future__ import annotations

import copy

import pytest
import torch

from decodebench.decoding import engine
from decodebench.decoding.engine import driver
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy

QUESTIONS = [
    "What colour is the sky on a clear day? Answer in one word.",
    "Write one sentence about the sea.",
    "What is 2 + 2?",
    "Say hello.",
    "What is the capital of France? One word.",
    "Tell me a very short joke.",
]


def chat_requests(tok, spec, n_samples=1, seed=0):
    reqs = []
    for i, q in enumerate(QUESTIONS):
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        for s in range(n_samples):
            reqs.append(Request(prompt_id=f"q{i}", prompt_ids=list(ids), sample_index=s, params=spec.params, seed=seed))
    return reqs


def tokens(outs):
    return [o.token_ids for o in outs]


@pytest.mark.parametrize("strategy", [
    {"name": "greedy", "max_new_tokens": 24},
    {"name": "topp", "do_sample": True, "top_p": 0.9, "max_new_tokens": 24},
])
def test_continuous_and_static_equal_each_request_alone_on_embedded_model(embedded, strategy):
    model, tok = embedded
    spec = build_strategy(strategy)
    reqs = chat_requests(tok, spec, n_samples=2 if strategy["name"] == "topp" else 1, seed=7)
    alone = [generate(model, tok, [r], spec, batch_size=1)[0][0] for r in reqs]
    assert any(o.finish_reason == "eos" for o in alone) and any(o.finish_reason == "length" for o in alone)
    for bs in (1, 5, 64):
        for cont in (True, False):
            outs, stats = generate(model, tok, reqs, spec, batch_size=bs, continuous=cont)
            assert tokens(outs) == tokens(alone), (bs, cont)
            assert [o.finish_reason for o in outs] == [o.finish_reason for o in alone]
            assert stats.generated_tokens == sum(len(o.token_ids) for o in alone)


@pytest.fixture(scope="module")
def eos_happy(tiny):
    """A copy of the tiny model that ends rows early and at different times (its own weights: the
    session's tiny model stays as it is)."""
    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] += 0.5
    return model, tok


def tiny_requests(tok, spec, n=24, seed=3):
    texts = [("abc" * (i % 7 + 1))[: i % 11 + 1] for i in range(n)]
    return [Request(prompt_id=str(i), prompt_ids=tok(t)["input_ids"], params=spec.params, seed=seed)
            for i, t in enumerate(texts)]


def test_natural_workload_spends_fewer_row_steps_and_gives_the_same_tokens(eos_happy):
    model, tok = eos_happy
    spec = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 48})
    reqs = tiny_requests(tok, spec)
    static, s_stats = generate(model, tok, reqs, spec, batch_size=6, continuous=False)
    cont, c_stats = generate(model, tok, reqs, spec, batch_size=6, continuous=True)
    lengths = [len(o.token_ids) for o in cont]
    assert min(lengths) < 5 and max(lengths) == 48  # rows end at very different times
    assert tokens(cont) == tokens(static)
    assert c_stats.generated_tokens == s_stats.generated_tokens
    # finished rows leave either way; continuous batching also keeps the batch full, so fewer forwards
    assert c_stats.row_steps <= s_stats.row_steps
    assert c_stats.forward_passes < s_stats.forward_passes
    # at most `sync_every - 1` extra steps per row between finishing and leaving its slot, plus the
    # forward of each row's last token
    assert c_stats.row_steps <= c_stats.generated_tokens + len(reqs) * 4


@pytest.mark.parametrize("k", [1, 2, 7])
def test_results_do_not_depend_on_the_host_work_interval(eos_happy, k):
    model, tok = eos_happy
    spec = build_strategy({"name": "topk", "do_sample": True, "top_k": 20, "max_new_tokens": 30,
                           "repetition_penalty": 1.3, "min_new_tokens": 3})
    reqs = tiny_requests(tok, spec, n=14)
    ref, _ = generate(model, tok, reqs, spec, batch_size=1)
    outs, _ = generate(model, tok, reqs, spec, batch_size=5, sync_every=k)
    assert tokens(outs) == tokens(ref)


def test_column_moves_keep_results(eos_happy, monkeypatch):
    """With almost no spare columns the running batch moves its columns back every few steps."""
    model, tok = eos_happy
    spec = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 40, "no_repeat_ngram_size": 3,
                           "presence_penalty": 0.5})
    reqs = tiny_requests(tok, spec, n=18)
    ref, _ = generate(model, tok, reqs, spec, batch_size=1)
    moves = []
    orig = engine.Runtime.allocate

    def small(self, slots, capacity):
        kv = orig(self, slots, capacity)
        shift = kv.shift
        kv.shift = lambda d: (moves.append(d), shift(d))
        return kv

    monkeypatch.setattr(driver, "kv_capacity", lambda reqs, spec, cont: max(len(r.prompt_ids) for r in reqs)
                        + spec.max_new_tokens + 2)
    monkeypatch.setattr(engine.Runtime, "allocate", small)
    for cont in (True, False):  # static batches too: finished rows wait for the host work past L columns
        moves.clear()
        outs, _ = generate(model, tok, reqs, spec, batch_size=4, continuous=cont, sync_every=5)
        assert moves, "the test should exercise column moves"
        assert tokens(outs) == tokens(ref)


def test_samples_of_a_prompt_are_prefilled_once(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 5, "num_return_sequences": 4})
    ids = tok("a prompt of some length")["input_ids"]
    reqs = [Request(prompt_id="p", prompt_ids=ids, sample_index=s, params=spec.params) for s in range(4)]
    outs, stats = generate(model, tok, reqs, spec, batch_size=4)
    assert len({tuple(o.token_ids) for o in outs}) > 1  # four different samples
    assert stats.tokens_processed == len(ids) + stats.row_steps  # one prefill of the prompt, then one token per row-step
    assert stats.forward_passes == 1 + stats.row_steps // 4


def test_sync_every_must_be_a_positive_integer(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "greedy", "max_new_tokens": 2})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="sync_every must be a positive integer"):
            generate(model, tok, tiny_requests(tok, spec, n=2), spec, sync_every=bad)
