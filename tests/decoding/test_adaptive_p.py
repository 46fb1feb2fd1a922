"""Adaptive-P against a step-by-step port of llama.cpp's sampler (src/llama-sampling.cpp as merged in PR 17927:
`llama_sampler_adaptive_p_apply`, `_accept`, `_init_adaptive_p`), per row in mixed batches, in fp32, bf16 and
fp16; its state across steps and rebuilt chains; seeds that hold at any batch size; and the recent samplers on
the embedded model. llama.cpp's test-sampling.cpp has no adaptive-P vectors to port."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decodebench.decoding import DecodeState, LogitsChain, SamplingParams, row_keys, sample

from .helpers import DTYPES, make_logits

F = np.float32
PEAK, SHARPNESS, INV_WIDTH = F(5.0), F(10.0), F(1.0) / F(0.3)


def _softmax_f32(x: np.ndarray) -> np.ndarray:
    """llama.cpp's `llama_sampler_softmax_impl` over the candidates (finite logits), unsorted, float32."""
    cand = np.isfinite(x)
    e = np.zeros_like(x)
    e[cand] = np.exp(x[cand] - x[cand].max())
    total = F(0)
    for v in e[cand]:
        total = F(total + v)
    return e / total


def ref_adaptive_p(steps: list[np.ndarray], tokens: list[int], target: float, decay: float):
    """One row, step by step with the tokens given: the distribution each token is drawn from, and the final
    (weighted_sum, total_weight)."""
    decay = F(min(max(decay, 0.0), 0.99))
    ws, tw = F(target) / (F(1) - decay), F(1) / (F(1) - decay)
    dists = []
    for x, tok in zip(steps, tokens):
        x = x.astype(F)
        p = _softmax_f32(x)
        if target < 0:
            dists.append(p)
            continue
        t = F(min(max(target, 0.0), 1.0))
        adapted = F(min(max(t if tw == 0 else F(2) * t - ws / tw, 0.0), 1.0))
        new = x.copy()
        for i in np.flatnonzero(np.isfinite(x)):
            d = F(abs((p[i] - adapted) * INV_WIDTH))
            new[i] = PEAK - SHARPNESS * d * d / (F(1) + d)
        dists.append(_softmax_f32(new))
        ws, tw = F(p[tok] + decay * ws), F(F(1) + decay * tw)
    return dists, float(ws), float(tw)


ROWS = [dict(adaptive_target=0.5), dict(adaptive_target=0.2, adaptive_decay=0.5), dict(),
        dict(adaptive_target=-1.0), dict(adaptive_target=0.9, adaptive_decay=0.99, min_p=0.05)]


def _run(rows, steps, keys):
    """The engine's loop on given logits: chain, sample, update. Returns the outputs and tokens per step."""
    b = len(rows)
    chain = LogitsChain.from_rows(rows, vocab_size=steps[0].shape[1], eos_token_id=None, device="cpu")
    empty = torch.zeros(b, 0, dtype=torch.long)
    outs, toks = [], []
    for step, x in enumerate(steps):
        out = chain(x, DecodeState(empty, empty, 0, step, keys=keys))
        t = sample(out, keys, step, chain.sample_mode)
        chain.update(t)
        outs.append(out)
        toks.append(t)
    return chain, outs, toks


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adaptive_p_equals_llamacpp_step_by_step_per_row(dtype):
    rows = [SamplingParams(do_sample=True, **r) for r in ROWS]
    steps = [make_logits(len(rows), 64, dtype, seed=s, neg_inf=0.2 if s % 2 else 0.0) for s in range(6)]
    keys = row_keys(7, [str(i) for i in range(len(rows))], [0] * len(rows))
    chain, outs, toks = _run(rows, steps, keys)
    assert chain.names[-1] == "adaptive_p"
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # the new logits are rounded to bf16/fp16
    state = chain._stateful["adaptive_p"]
    for i, r in enumerate(rows):
        # the reference reads what reaches adaptive-P: min-p's output for the last row
        seen = [LogitsChain.from_rows([r.replace(adaptive_target=None)], vocab_size=64, eos_token_id=None,
                                      device="cpu")(s[i:i + 1], DecodeState(*[torch.zeros(1, 0, dtype=torch.long)] * 2,
                                                                            0, 0))[0] for s in steps]
        target = r.adaptive_target if r.adaptive_target is not None else -1.0
        dists, ws, tw = ref_adaptive_p([s.float().numpy() for s in seen], [int(t[i]) for t in toks], target,
                                       r.adaptive_decay)
        for out, want in zip(outs, dists):
            got = out[i].float().softmax(-1).numpy()
            assert np.allclose(got, want, atol=tol), (i, np.abs(got - want).max())
        if target >= 0:
            assert math.isclose(float(state.weighted_sum[i]), ws, rel_tol=1e-5)
            assert math.isclose(float(state.total_weight[i]), tw, rel_tol=1e-6)
        else:
            assert all(torch.equal(o[i], s) for o, s in zip(outs, seen))  # off: sampled as it came


def test_adaptive_p_rows_and_seeds_do_not_depend_on_batch_mates():
    rows = [SamplingParams(do_sample=True, **r) for r in ROWS]
    steps = [make_logits(len(rows), 64, seed=100 + s) for s in range(8)]
    keys = row_keys(3, [f"p{i}" for i in range(len(rows))], [0] * len(rows))
    _, _, together = _run(rows, steps, keys)
    for i in range(len(rows)):
        _, _, alone = _run(rows[i:i + 1], [s[i:i + 1] for s in steps], keys[i:i + 1])
        assert [int(t[0]) for t in alone] == [int(t[i]) for t in together], i


def test_adaptive_p_state_follows_rows_into_a_rebuilt_chain():
    rows = [SamplingParams(do_sample=True, **r) for r in ROWS[:3]]
    steps = [make_logits(3, 64, seed=200 + s) for s in range(4)]
    keys = row_keys(0, ["a", "b", "c"], [0, 0, 0])
    chain, _, _ = _run(rows, steps, keys)
    st = chain._stateful["adaptive_p"]
    sub = chain.select([1, 0])._stateful["adaptive_p"]
    assert torch.equal(sub.weighted_sum, st.weighted_sum[[1, 0]])
    assert torch.equal(sub.total_weight, st.total_weight[[1, 0]])
    new = LogitsChain.from_rows([rows[0], rows[1]], vocab_size=64, eos_token_id=None, device="cpu")
    new.carry_state(chain, [None, 1])  # a joined row keeps its primed state: target / (1 - decay)
    got = new._stateful["adaptive_p"]
    assert math.isclose(float(got.weighted_sum[0]), 0.5 / (1 - 0.9), rel_tol=1e-6)
    assert float(got.weighted_sum[1]) == float(st.weighted_sum[1])
    assert float(st.total_weight[0]) != float(1 / (1 - 0.9))  # the carried row had moved on


@pytest.mark.parametrize("kw,msg", [
    (dict(adaptive_target=1.5), "adaptive_target must be in [-1, 1]"),
    (dict(adaptive_target=-1.01), "adaptive_target must be in [-1, 1]"),
    (dict(adaptive_target=0.5, adaptive_decay=1.0), "adaptive_decay must be in [0, 0.99]"),
    (dict(adaptive_target=0.5, mirostat=2), "adaptive-P and mirostat both pick the token"),
])
def test_adaptive_p_bad_settings_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("[", "\\[").replace("]", "\\]")):
        SamplingParams(do_sample=True, **kw)
    SamplingParams(do_sample=True, adaptive_target=-1.0, mirostat=2)  # off: no conflict


@pytest.mark.parametrize("params", [dict(p_less=True), dict(p_less_norm=True), dict(min_k=True, temperature=3.0),
                                    dict(adaptive_target=0.4, min_p=0.05)])
def test_recent_samplers_on_the_embedded_model_do_not_depend_on_batch_mates(embedded, params):
    from .test_embedded_samplers import generate

    model, tok = embedded
    rows = [SamplingParams(do_sample=True, **params), SamplingParams(do_sample=True, top_k=20)]
    # prompts of one token length (no padding), and the row under test first (its key is row 0's either way)
    together, _ = generate(model, tok, ["The weather today", "A list of fruits:"], rows, max_new=6, seed=5)
    alone, _ = generate(model, tok, ["The weather today"], rows[:1], max_new=6, seed=5)
    assert together[0] == alone[0] and len(alone[0]) > 0


@pytest.mark.parametrize("params", [dict(p_less=True), dict(p_less_norm=True), dict(min_k=True, temperature=2.0),
                                    dict(adaptive_target=0.3, adaptive_decay=0.8)])
def test_continuous_batching_equals_each_request_alone(tiny, params):
    """Rows leave and join a running batch of 3 (their chains rebuilt, adaptive-P's state carried): every
    request's tokens equal the request run alone."""
    import copy

    from decodebench.decoding.engine import Request, generate
    from decodebench.decoding.search.spec import build_strategy

    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaked distributions: adaptive-P's moving average then decides
        model.lm_head.weight[tok.eos_token_id] += 2.0  # rows end early, at different times
    spec = build_strategy({"name": "x", "do_sample": True, "max_new_tokens": 24, **params})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(("abc" * (i % 5 + 1))[: i % 9 + 1])["input_ids"],
                    params=spec.params, seed=4) for i in range(10)]
    alone = [generate(model, tok, [r], spec, batch_size=1)[0][0].token_ids for r in reqs]
    outs, _ = generate(model, tok, reqs, spec, batch_size=3, continuous=True)
    assert [o.token_ids for o in outs] == alone
    assert len({len(a) for a in alone}) > 1  # rows did end at different times
