"""The whole decode step (chain -> sample -> bookkeeping -> KV write -> forward) under
`torch.compile(fullgraph=True)`: zero graph breaks (fullgraph raises on any), one graph per batch-size
bucket, the eager tokens, with continuous batching and compaction on."""

from __future__ import annotations

import logging

import pytest
import torch

from decodebench.decoding.engine import step as step_mod
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from tests.test_step_dispatch import CHAINS


def requests(tok, spec, n=7):
    return [Request(prompt_id=str(i), prompt_ids=tok("ab" * (i % 4 + 1))["input_ids"], params=spec.params, seed=5)
            for i in range(n)]


class Graphs:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    def __init__(self):
        self.count = 0

    def __call__(self, gm, example_inputs):
        self.count += 1
        return gm.forward


def run(model, tok, strategy, monkeypatch, backend, n=7, batch=4, new_tokens=10):
    spec = build_strategy({**strategy, "max_new_tokens": new_tokens})
    reqs = requests(tok, spec, n)
    eager, _ = generate(model, tok, reqs, spec, batch_size=batch)
    failures = []
    orig = step_mod.Stepper.__call__

    def watched(self, rb, a):
        orig(self, rb, a)
        failures.extend(self.failed)
        assert self.whole, "the plain runtime compiles the step whole"

    monkeypatch.setattr(step_mod.Stepper, "__call__", watched)
    comp, stats = generate(model, tok, reqs, spec, batch_size=batch, compile=backend)
    return eager, comp, stats, failures


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_default_chain_compiles_whole_with_no_graph_break(tiny, chain, monkeypatch):
    model, tok = tiny
    torch._dynamo.reset()
    graphs = Graphs()
    eager, comp, stats, failures = run(model, tok, CHAINS[chain], monkeypatch, graphs)
    assert failures == []  # fullgraph=True: a graph break would have raised and been recorded
    assert [o.token_ids for o in comp] == [o.token_ids for o in eager]
    assert [o.finish_reason for o in comp] == [o.finish_reason for o in eager]
    # 7 requests through 4 slots: the full bucket, then compaction to buckets 2 and 1 (at most one graph
    # each per chain build); never a graph per step
    assert 1 <= graphs.count <= len(step_mod.buckets(4)) + 1, graphs.count
    assert stats.steps > 3 * graphs.count


@pytest.mark.parametrize("chain", ["greedy", "top_p"])
def test_inductor_step_gives_the_eager_tokens_with_continuous_batching(tiny, chain, monkeypatch, caplog):
    model, tok = tiny
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="decodebench"):
        eager, comp, stats, failures = run(model, tok, CHAINS[chain], monkeypatch, "inductor", n=5, batch=2)
    assert failures == [] and not any("eagerly" in r.message for r in caplog.records)
    assert [o.token_ids for o in comp] == [o.token_ids for o in eager]
    assert stats.compile_s > 0


def test_buckets_are_powers_of_two_and_the_batch():
    assert step_mod.buckets(1) == [1]
    assert step_mod.buckets(6) == [1, 2, 4, 6]
    assert [step_mod.bucket_for(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]


@pytest.mark.parametrize("chain,bs,continuous", [
    ("top_p", 1, True), ("top_p", 5, True), ("top_p", 64, True), ("top_p", 5, False), ("top_p", 64, False),
    ("greedy", 64, True), ("penalties", 64, True)])
def test_compiled_tokens_equal_each_request_alone_at_batch_sizes_1_5_and_64(tiny, chain, bs, continuous):
    """The compiled step (traced whole, run as traced) gives every request the tokens it gets alone in eager
    mode, at batch sizes 1, 5 and 64, with continuous batching (rows join mid-run: 70 requests through 64
    slots) and with static batches."""
    model, tok = tiny
    torch._dynamo.reset()
    spec = build_strategy({**CHAINS[chain], "max_new_tokens": 8})
    reqs = requests(tok, spec, n=70)
    alone = [generate(model, tok, [r], spec, batch_size=1)[0][0].token_ids for r in reqs[:: 23]]
    comp, stats = generate(model, tok, reqs, spec, batch_size=bs, continuous=continuous, compile=Graphs())
    assert stats.compile_s > 0  # the compiled path ran
    assert [o.token_ids for o in comp[:: 23]] == alone
    eager, _ = generate(model, tok, reqs, spec, batch_size=bs, continuous=continuous)
    assert [o.token_ids for o in comp] == [o.token_ids for o in eager]
