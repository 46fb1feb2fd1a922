"""Shared histories (decoding/engine/shared.py): rows of one prompt that drew the same tokens run one
forward between them. The tokens must equal the unshared batch's and each row run alone, at every batch
size, static and continuous, with rows ending at different steps, stop strings and compaction; and the
forward must really be shared (fewer rows fed)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.engine import step as step_mod
from decodebench.decoding.engine.shared import SharedHistories
from decodebench.decoding.search.spec import build_strategy

from tests.test_continuous import QUESTIONS

# a study's one-token points: the same prompts and noise, different methods and settings
POINTS = [
    {"do_sample": False},
    {"do_sample": True, "top_p": 0.8},
    {"do_sample": True, "top_p": 0.95},
    {"do_sample": True, "typical_p": 0.95},
    {"do_sample": True, "min_p": 0.1},
    {"do_sample": True, "top_k": 10},
    {"do_sample": True, "temperature": 1.5, "top_p": 0.9},
]


def fused_requests(tok, prompts, seed=5, chat=True):
    base = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 20})
    reqs = []
    for i, q in enumerate(prompts):
        if chat:
            ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        else:
            ids = tok(q)["input_ids"]
        for p in POINTS:
            params = build_strategy({"name": "x", **p}).params
            reqs.append(Request(prompt_id=f"q{i}", prompt_ids=ids, params=params, seed=seed))
    return base, reqs


def toks(outs):
    return [o.token_ids for o in outs]


def test_the_bookkeeping_splits_groups_by_token_and_hands_over_a_finished_leader():
    sh = SharedHistories(5)
    sh.admitted([0, 1, 2, 3, 4], [(1,), (1,), (1,), (2,), (2,)])
    assert sh.lead == [0, 0, 0, 3, 3] and sh.active
    leaders, forks = sh.regroup([7, 7, 8, 5, 5], [False] * 5)
    assert leaders == [0, 2, 3] and forks == [(0, 2)] and sh.lead == [0, 0, 2, 3, 3]
    leaders, forks = sh.regroup([0, 6, 9, 5, 5], [True, False, False, False, False])  # the leader ends
    assert leaders == [1, 2, 3] and forks == [(0, 1)] and sh.lead == [0, 1, 2, 3, 3]
    assert sh.release([3]) == [(3, 4)] and sh.lead[4] == 4  # harvested while it led row 4
    sh.regroup([0, 1, 2, 0, 3], [True, False, False, True, False])
    assert not sh.active  # every live row alone: the batch stops reading tokens
    sh.compacted([1, 2, 4], 5)
    assert sh.lead == [0, 1, 2, 3, 4] and sh.live == [True, True, True, False, False]


@pytest.mark.parametrize("bs", [1, 5, 64])
@pytest.mark.parametrize("cont", [True, False])
def test_shared_equals_unshared_and_alone_on_embedded_model(embedded, bs, cont):
    model, tok = embedded
    spec, reqs = fused_requests(tok, QUESTIONS[:3])
    off, off_stats = generate(model, tok, reqs, spec, batch_size=bs, continuous=cont, share_histories=False)
    on, on_stats = generate(model, tok, reqs, spec, batch_size=bs, continuous=cont, share_histories=True)
    assert toks(on) == toks(off)
    assert [o.finish_reason for o in on] == [o.finish_reason for o in off]
    if bs == 64 and cont:
        alone = [generate(model, tok, [r], spec, batch_size=1, share_histories=False)[0][0] for r in reqs]
        assert toks(on) == toks(alone)
        assert len({tuple(t) for t in toks(on)}) > len(QUESTIONS[:3])  # the points do differ
    if bs > 1:  # rows of one prompt that drew the same tokens were fed once
        assert on_stats.row_steps < off_stats.row_steps
    else:
        assert on_stats.row_steps == off_stats.row_steps


@pytest.fixture(scope="module")
def eos_happy(tiny):
    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] += 0.5
    return model, tok


@pytest.mark.parametrize("cont,sync_every", [(True, 1), (True, 4), (False, 3)])
def test_rows_ending_early_and_leaders_leaving_keep_every_token(eos_happy, cont, sync_every):
    """Rows end at different steps (leaders among them), slots refill and the batch compacts."""
    model, tok = eos_happy
    texts = [("abc" * (i % 7 + 1))[: i % 11 + 1] for i in range(6)]
    spec, reqs = fused_requests(tok, texts, seed=3, chat=False)
    spec = dataclasses.replace(spec, max_new_tokens=40)
    kw = dict(batch_size=9, continuous=cont, sync_every=sync_every)
    off, off_stats = generate(model, tok, reqs, spec, share_histories=False, **kw)
    on, on_stats = generate(model, tok, reqs, spec, share_histories=True, **kw)
    assert {o.finish_reason for o in off} == {"eos", "length"}
    assert toks(on) == toks(off) and on_stats.row_steps < off_stats.row_steps


def test_stop_strings_release_their_rows(embedded):
    model, tok = embedded
    spec, reqs = fused_requests(tok, QUESTIONS[:4])
    spec = dataclasses.replace(spec, stop=(".", "!"), max_new_tokens=24)
    off, _ = generate(model, tok, reqs, spec, batch_size=14, share_histories=False)
    on, _ = generate(model, tok, reqs, spec, batch_size=14, share_histories=True)
    assert any(o.finish_reason == "stop" for o in off)
    assert toks(on) == toks(off) and [o.finish_reason for o in on] == [o.finish_reason for o in off]


def test_without_the_fork_copy_tokens_change(embedded, monkeypatch):
    """The fork's KV copy is what keeps a row that leaves its group right: skip it and tokens differ
    (so the equality tests above would catch a broken fork)."""
    model, tok = embedded
    spec, reqs = fused_requests(tok, QUESTIONS[:3])
    off, _ = generate(model, tok, reqs, spec, batch_size=21, share_histories=False)
    monkeypatch.setattr(step_mod, "copy_rows", lambda *a, **k: None)
    broken, _ = generate(model, tok, reqs, spec, batch_size=21, share_histories=True)
    assert toks(broken) != toks(off)


def test_auto_shares_on_a_cpu(tiny):
    model, tok = tiny
    spec, reqs = fused_requests(tok, ["abc", "ab"], chat=False)
    _, auto = generate(model, tok, reqs, spec, batch_size=14)
    _, off = generate(model, tok, reqs, spec, batch_size=14, share_histories=False)
    assert auto.row_steps < off.row_steps
