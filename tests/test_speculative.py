"""Speculative decoding: greedy parity with greedy decoding (every draft source), the exact next-token
distribution of one round by enumeration against the target's processed distribution, a chi-square test
of sampled outputs against the target's exact distribution, and bad input."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.speculative import lookup_drafts, verify
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


def _reqs(tok, texts, spec, samples=1):
    return [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params, seed=0)
            for i, x in enumerate(texts) for s in range(samples)]


def _spec(assistant, **kw):
    return build_strategy({"name": "s", "method": "speculative", "assistant": assistant, **kw})


@pytest.mark.parametrize("assistant,k,schedule", [
    ({"early_exit": 1}, 3, "constant"), ({"prompt_lookup": 2}, 2, "constant"), ({"model": "tiny-random"}, 4, "constant"),
    ({"early_exit": 1}, 2, "heuristic")])
def test_greedy_equals_greedy_on_tiny(assistant, k, schedule):
    model, tok = peaky_tiny()
    greedy = build_strategy({"name": "g", "max_new_tokens": 12, "repetition_penalty": 1.3})
    ref, _ = generate(model, tok, _reqs(tok, TEXTS, greedy), greedy, batch_size=6)
    spec = _spec(assistant, num_assistant_tokens=k, max_new_tokens=12, repetition_penalty=1.3,
                 num_assistant_tokens_schedule=schedule)
    outs, stats = generate(model, tok, _reqs(tok, TEXTS, spec), spec, batch_size=3)
    assert [o.token_ids for o in outs] == [o.token_ids for o in ref]
    assert [o.finish_reason for o in outs] == [o.finish_reason for o in ref]
    ex = stats.extra
    assert 0 <= ex["draft_accepted"] <= ex["draft_proposed"]
    if schedule == "constant":
        assert ex["draft_proposed"] == k * ex["verify_rows"]


@pytest.mark.parametrize("assistant", [{"early_exit": 1}, {"prompt_lookup": 2}])
def test_stop_strings_and_criteria_end_rows_as_in_greedy_decoding(assistant):
    """The shared finished-row component: a stop string or a criterion ends a row at the exact token,
    even mid-round (the round's later accepted tokens are dropped), with greedy decoding's reason."""
    model, tok = peaky_tiny()
    free = build_strategy({"name": "g", "max_new_tokens": 16})
    texts = [tok.decode(o.token_ids) for o in generate(model, tok, _reqs(tok, TEXTS, free), free)[0]]
    stop = next(t[4:6] for t in texts if len(t) > 8)
    for extra in ({"stop": [stop]}, {"stopping": ["newline"]}, {"stop": [stop], "stopping": ["newline"]}):
        greedy = build_strategy({"name": "g", "max_new_tokens": 16, **extra})
        ref, _ = generate(model, tok, _reqs(tok, TEXTS, greedy), greedy, batch_size=6)
        spec = _spec(assistant, num_assistant_tokens=3, max_new_tokens=16, **extra)
        outs, _ = generate(model, tok, _reqs(tok, TEXTS, spec), spec, batch_size=3, sync_every=7)
        assert [o.token_ids for o in outs] == [o.token_ids for o in ref], extra
        assert [o.finish_reason for o in outs] == [o.finish_reason for o in ref], extra
    assert any(o.finish_reason == "stop" for o in ref)


def test_max_time_ends_speculative_rows():
    model, tok = peaky_tiny()
    spec = _spec({"early_exit": 1}, num_assistant_tokens=2, max_new_tokens=300, min_new_tokens=300, max_time=1e-6)
    outs, _ = generate(model, tok, _reqs(tok, TEXTS[:2], spec), spec, batch_size=2)
    assert all(o.finish_reason == "time" and 0 < len(o.token_ids) < 300 for o in outs)


def test_greedy_equals_greedy_on_the_embedded_model(embedded):
    model, tok = embedded
    texts = ["The capital of France is", "def fib(n):\n    return", "1, 2, 3, 4,"]
    greedy = build_strategy({"name": "g", "max_new_tokens": 8})
    ref, _ = generate(model, tok, _reqs(tok, texts, greedy), greedy, batch_size=3)
    for assistant in ({"early_exit": 12}, {"prompt_lookup": 3}):
        spec = _spec(assistant, num_assistant_tokens=3, max_new_tokens=8)
        outs, stats = generate(model, tok, _reqs(tok, texts, spec), spec, batch_size=3)
        assert [o.token_ids for o in outs] == [o.token_ids for o in ref]
        assert stats.forward_passes <= stats.generated_tokens  # at most one verification per token


def test_one_round_distribution_by_enumeration():
    """k = 1: P(first token = t) = sum_d q(d) [a(d) [t = d] + (1 - a(d)) R(t)], a = min(1, p/q), R the
    residual that `verify` returns on a rejection; it must be the target's p exactly."""
    model, tok = peaky_tiny()
    ids = torch.tensor([tok("hello world")["input_ids"]])
    with torch.no_grad():
        p = (model(ids).logits[0, -1].float() / 0.8).softmax(-1)  # temperature 0.8 on both
        from decodebench.decoding.search.speculative import truncated

        q = (truncated(model, 1)(ids).logits[0, -1].float() / 0.8).softmax(-1)
    V = p.shape[0]
    drafts = torch.arange(V)[:, None]  # every draft token at once, one row each
    P, Q = p.expand(V, 2, V).clone(), q.expand(V, 1, V).clone()
    not_greedy = torch.zeros(V, dtype=torch.bool)
    acc0, _ = verify(P, Q, drafts, torch.full((V, 1), 1e-9), not_greedy)
    acc1, resid = verify(P, Q, drafts, torch.full((V, 1), 1.0), not_greedy)
    assert acc0.tolist() == [int(x > 0) for x in p.tolist()]  # u -> 0 accepts every token p allows
    a = torch.minimum(torch.ones(V), p / q)
    total = (q * a) @ torch.eye(V) + ((q * (1 - a))[:, None] * resid).sum(0)
    rejected = acc1 == 0  # with u -> 1, the tokens with p < q are the ones rejected: their residual counts
    assert rejected.tolist() == (p < q).tolist()
    assert torch.allclose(total, p, atol=1e-6)


def test_sampled_outputs_follow_the_target_chi_square():
    """Two tokens from one prompt, 2000 seeds (sample indices): the pair counts against the target's exact
    joint distribution under top_k=4, temperature 0.9 (up to 16 cells; the second token is speculative)."""
    from scipy.stats import chisquare

    model, tok = peaky_tiny()
    prompt = tok("hello world")["input_ids"]
    spec = _spec({"early_exit": 1}, num_assistant_tokens=2, max_new_tokens=2, do_sample=True, top_k=4,
                 temperature=0.9)
    n = 2000
    reqs = [Request(prompt_id="p", prompt_ids=prompt, sample_index=s, params=spec.params, seed=3) for s in range(n)]
    outs, stats = generate(model, tok, reqs, spec, batch_size=n)

    def dist(ids):
        with torch.no_grad():
            x = model(torch.tensor([ids])).logits[0, -1].float() / 0.9
        top = x.topk(4)
        return dict(zip(top.indices.tolist(), top.values.softmax(-1).tolist()))

    eos = model.generation_config.eos_token_id
    exact = {}
    for a, pa in dist(prompt).items():  # an EOS first token ends the output: a cell of its own
        exact.update({(a,): pa} if a == eos else {(a, b): pa * pb for b, pb in dist(prompt + [a]).items()})
    counts = {c: 0 for c in exact}
    for o in outs:
        counts[tuple(o.token_ids[:2])] += 1  # a pair outside the support would raise here
    cells = sorted(exact)
    z = sum(exact.values())  # 1 up to float32 rounding, which chisquare's sum check would trip on
    _, pval = chisquare([counts[c] for c in cells], [n * exact[c] / z for c in cells])
    assert pval > 1e-3
    assert stats.extra["draft_accepted"] > 0


def test_prompt_lookup_drafts_by_hand():
    assert lookup_drafts([[1, 2, 3, 4, 1, 2]], 2, 3, 0) == [[3, 4, 1]]
    assert lookup_drafts([[5, 6, 7, 6]], 2, 2, 0) == [[7, 6]]  # no 2-gram match, the 1-gram "6" matches
    assert lookup_drafts([[1, 2, 3]], 2, 2, 9) == [[9, 9]]


@pytest.mark.parametrize("d, msg", [
    ({"assistant": {}}, "assistant must name exactly one draft source"),
    ({"assistant": {"early_exit": 2, "prompt_lookup": 2}}, "exactly one draft source"),
    ({"assistant": {"early_exit": 0}}, "assistant.early_exit must be an integer >= 1"),
    ({"assistant": {"draft": "x"}}, "assistant.draft is not a draft source"),
    ({"assistant": {"early_exit": 1}, "num_assistant_tokens": 0}, "num_assistant_tokens must be an integer >= 1"),
    ({"assistant": {"early_exit": 1}, "num_assistant_tokens_schedule": "dynamic"}, "must be constant or heuristic"),
])
def test_bad_settings(d, msg):
    with pytest.raises(ValueError, match=msg) as e:
        build_strategy({"name": "s", "method": "speculative", **d})
    assert "\n" not in str(e.value).replace("'\\n'", "")


def test_early_exit_beyond_the_model(tiny):
    model, tok = tiny
    spec = _spec({"early_exit": 2})
    with pytest.raises(ValueError, match=r"assistant.early_exit must be < the target's 2 layers, got 2"):
        generate(model, tok, _reqs(tok, ["a"], spec), spec)


def test_run_refuses_early_exit_beyond_the_model(cfg_of, tmp_path):
    from decodebench.config import ConfigError
    from decodebench.runner import execute

    cfg = cfg_of(["model=tiny", "strategy=speculative", "logger=none", "progress=false"])  # early_exit: 8
    with pytest.raises(ConfigError, match=r"^strategy\.assistant\.early_exit must be < the target's 2 layers, got 8$"):
        execute(to_specs(cfg), tmp_path)


def test_assistant_with_another_vocabulary_is_refused(embedded):
    from decodebench.config import ConfigError
    from decodebench.runner import check_with_model

    spec = _spec({"model": "tiny-random"})
    with pytest.raises(ConfigError, match=r"^strategy\.assistant\.model: model 'tiny-random' has a vocabulary of "
                                          r"259 tokens, the target 49152; it must share the target's tokenizer$"):
        check_with_model(spec, embedded[0])
