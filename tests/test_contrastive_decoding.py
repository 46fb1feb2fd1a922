"""Contrastive decoding against a port of the authors' released code (XiangLi1999/ContrastiveDecoding,
transformers/src/transformers/generation_logits_process.py `EntrPLogitsWarper` and generation_utils.py's
greedy step), on fixed logit pairs and through the engine against a slow loop with no cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decodebench.decoding.search.contrastive_decoding import contrastive_scores
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


def authors_scores(teacher, student, relative_top, st_coef, student_temperature, min_tokens_to_keep=1):
    """Li et al.'s greedy step, ported: EntrPLogitsWarper on the teacher (expert), the student's (amateur's)
    logits through its temperature warper, then `teacher - st_coef * student`."""
    scores_normalized = teacher.log_softmax(dim=-1)
    sorted_logits, _ = torch.sort(scores_normalized, descending=True)
    min_thresh = sorted_logits[:, min_tokens_to_keep - 1]
    probs_max = torch.max(scores_normalized, dim=-1).values
    probs_thresh = torch.min(min_thresh, probs_max + np.log(relative_top)).unsqueeze(-1)
    scores_normalized[scores_normalized < probs_thresh] = -float("Inf")
    return scores_normalized - st_coef * (student / student_temperature)


def _same_up_to_row_constant(ours, ref):
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(ours), fin)
    d = torch.where(fin, ours - ref, torch.nan)
    spread = np.nanmax(d.numpy(), axis=1) - np.nanmin(d.numpy(), axis=1)
    assert spread.max() < 1e-4
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("alpha,tau", [(0.1, 1.0), (0.5, 0.5), (0.01, 2.0), (1.0, 1.0)])
def test_scores_equal_the_authors_code_on_fixed_logits(alpha, tau):
    g = torch.Generator().manual_seed(0)
    expert, amateur = 3 * torch.randn(16, 300, generator=g), 3 * torch.randn(16, 300, generator=g)
    ours = contrastive_scores(expert, amateur, alpha, None, tau)
    _same_up_to_row_constant(ours, authors_scores(expert.clone(), amateur, alpha, 1.0, tau))
    # O'Brien & Lewis: (1 + b) lp_e - b lp_a = (1 + b) * (the authors' score with st_coef b / (1 + b)) + c
    for b in (0.1, 0.5, 2.0):
        ours = contrastive_scores(expert, amateur, alpha, b, tau)
        _same_up_to_row_constant(ours, (1 + b) * authors_scores(expert.clone(), amateur, alpha, b / (1 + b), tau))


@torch.inference_mode()
def slow_cd(model, prompt, n_layers, alpha, n_new, eos, beta=None):
    """The target's first n layers as a separate truncated model, run from scratch each step."""
    import copy

    small = copy.deepcopy(model)
    small.model.layers = small.model.layers[:n_layers]
    small.config.num_hidden_layers = n_layers
    ids, out = list(prompt), []
    for _ in range(n_new):
        e = model(torch.tensor([ids])).logits[:, -1].float()
        a = small(torch.tensor([ids])).logits[:, -1].float()
        st = 1.0 if beta is None else beta / (1 + beta)
        tok = int(authors_scores(e, a, alpha, st, 1.0).argmax(-1))
        out.append(tok)
        ids.append(tok)
        if tok == eos:
            break
    return out


def run(model, tok, texts, d, batch_size=64):
    spec = build_strategy({"name": "cd", "method": "contrastive_decoding", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    return generate(model, tok, reqs, spec, batch_size=batch_size)


@pytest.mark.parametrize("beta", [None, 0.5])
def test_greedy_early_layer_amateur_equals_slow_loop(beta):
    model, tok = peaky_tiny()
    outs, stats = run(model, tok, TEXTS, {"amateur_layers": 1, "cd_alpha": 0.1, "cd_beta": beta,
                                          "max_new_tokens": 6}, batch_size=4)
    eos = model.generation_config.eos_token_id
    for text, o in zip(TEXTS, outs):
        assert o.token_ids == slow_cd(model, tok(text)["input_ids"], 1, 0.1, 6, eos, beta)
    assert stats.forward_passes > 0


def test_second_model_amateur_runs_in_step(tiny):
    """The amateur = the target itself at temperature 2: log p_e - log p_a = logits/2 + c, so contrastive
    decoding is greedy within the plausibility set, which holds greedy's token: the TiedKV state must
    follow the target's through prefill, continuous refills and compaction for this to hold."""
    model, tok = tiny
    greedy = build_strategy({"name": "g", "max_new_tokens": 5})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=greedy.params)
            for i, x in enumerate(TEXTS)]
    ref, _ = generate(model, tok, reqs, greedy, batch_size=2)
    outs, stats = run(model, tok, TEXTS, {"amateur": "tiny-random", "amateur_temperature": 2.0,
                                          "max_new_tokens": 5}, batch_size=2)
    assert [o.token_ids for o in outs] == [o.token_ids for o in ref]
    assert stats.tokens_processed > 0


@pytest.mark.parametrize("d, msg", [
    ({}, "amateur or amateur_layers must be set"),
    ({"amateur_layers": 0}, "amateur_layers must be an integer >= 1"),
    ({"amateur_layers": 1, "cd_alpha": 0}, "cd_alpha must be in"),
    ({"amateur_layers": 1, "cd_beta": -1}, "cd_beta must be >= 0"),
])
def test_bad_settings(d, msg):
    with pytest.raises(ValueError, match=msg) as e:
        build_strategy({"name": "cd", "method": "contrastive_decoding", **d})
    assert "\n" not in str(e.value)


def test_amateur_layers_beyond_the_model(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match=r"amateur_layers must be in \[1, 1\] for this model \(2 layers\), got 2"):
        run(model, tok, ["a"], {"amateur_layers": 2})
