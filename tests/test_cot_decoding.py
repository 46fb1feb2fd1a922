"""CoT-decoding against a slow port of optillm's `cot_decode` (codelion/optillm, optillm/cot_decoding.py,
Apache-2.0): one prompt at a time, `model.generate` per branch, its `calculate_confidence` and
`aggregate_paths_based_on_scores` as written there. The port differs only where the module docstring says
decodebench does (max_new_tokens counts the branch token; a branch that starts with EOS ends there)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401


def calculate_confidence(logits, answer_ids) -> float:  # optillm, verbatim but for style
    confidence_sum, valid_tokens = 0.0, 0
    for t, _ in enumerate(answer_ids):
        if t >= len(logits):
            break
        probs = torch.softmax(logits[t], dim=-1)
        top_2_probs, _ = torch.topk(probs, min(2, probs.size(-1)))
        confidence_sum += (top_2_probs[-1][0] - top_2_probs[-1][1]).item()
        valid_tokens += 1
    return confidence_sum / valid_tokens if valid_tokens > 0 else 0.0


def aggregate_paths_based_on_scores(paths):  # optillm, verbatim
    answer_scores = {}
    for answer, delta in paths:
        answer_scores[answer] = answer_scores.get(answer, 0) + delta
    best_answer = max(answer_scores, key=answer_scores.get)
    return best_answer, answer_scores[best_answer]


@torch.inference_mode()
def optillm_cot(model, tok, prompt_ids, k, max_new_tokens, repetition_penalty=1.0, aggregate=False):
    """optillm's cot_decode on token ids (the chat template step left out). Returns (text, confidence,
    paths as (token ids, confidence))."""
    input_ids = torch.tensor([prompt_ids])
    first = model(input_ids).logits[0, -1, :]
    _, top_k_indices = torch.topk(first.float(), k)
    paths, ids = [], []
    for idx in top_k_indices:
        if int(idx) == tok.eos_token_id:  # decodebench: an EOS branch ends at once, confidence 0
            ids.append([int(idx)])
            paths.append((tok.decode([int(idx)], skip_special_tokens=True), 0.0))
            continue
        start_ids = torch.cat([input_ids, idx.view(1, 1)], dim=-1)
        out = model.generate(start_ids, attention_mask=torch.ones_like(start_ids), max_new_tokens=max_new_tokens - 1,
                             do_sample=False, num_beams=1, repetition_penalty=repetition_penalty,
                             pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, output_scores=True,
                             return_dict_in_generate=True)
        answer_ids = out.sequences[0][len(input_ids[0]):]
        paths.append((tok.decode(answer_ids, skip_special_tokens=True), calculate_confidence(out.scores, answer_ids)))
        ids.append(answer_ids.tolist())
    if aggregate:
        text, conf = aggregate_paths_based_on_scores(paths)
    else:
        text, conf = max(paths, key=lambda x: x[1])
    return text, conf, list(zip(ids, [c for _, c in paths]))


def run(model, tok, texts, d, batch_size=8):
    spec = build_strategy({"name": "cot", "method": "cot_decoding", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    return generate(model, tok, reqs, spec, batch_size=batch_size)


@pytest.mark.parametrize("k,L,rp,agg", [(4, 8, 1.0, False), (3, 6, 1.3, False), (5, 5, 1.0, True), (1, 4, 1.0, False)])
def test_cot_equals_optillm_on_tiny(k, L, rp, agg):
    model, tok = peaky_tiny()
    texts = TEXTS[:4]
    outs, _ = run(model, tok, texts, dict(cot_k=k, max_new_tokens=L, repetition_penalty=rp, aggregate_paths=agg))
    for x, o in zip(texts, outs):
        text, conf, paths = optillm_cot(model, tok, tok(x)["input_ids"], k, L, rp, agg)
        assert o.extra["cot_first_tokens"] == [p[0][0] for p in paths]  # same branches
        assert o.extra["cot_confidences"] == pytest.approx([c for _, c in paths], abs=1e-5)  # same margins
        assert tok.decode(o.token_ids, skip_special_tokens=True) == text  # same choice
        assert o.token_ids == paths[o.extra["cot_branch"]][0]
        if not agg:
            assert o.score == pytest.approx(conf, abs=1e-5)


def test_cot_equals_optillm_on_embedded(embedded):
    model, tok = embedded
    texts = ["Q: What is 3 + 4? A:", "The capital of France is"]
    outs, _ = run(model, tok, texts, dict(cot_k=3, max_new_tokens=6))
    for x, o in zip(texts, outs):
        text, conf, paths = optillm_cot(model, tok, tok(x)["input_ids"], 3, 6)
        assert o.extra["cot_first_tokens"] == [p[0][0] for p in paths]
        assert o.extra["cot_confidences"] == pytest.approx([c for _, c in paths], abs=1e-4)
        assert o.token_ids == paths[o.extra["cot_branch"]][0]


def test_cot_output_does_not_depend_on_batch():
    model, tok = peaky_tiny()
    d = dict(cot_k=3, max_new_tokens=6)
    alone = [run(model, tok, [x], d)[0][0].token_ids for x in TEXTS[:3]]
    together, _ = run(model, tok, TEXTS[:3], d, batch_size=3)
    assert [o.token_ids for o in together] == alone


@pytest.mark.parametrize("d,key", [({"cot_k": 0}, "cot_k"), ({"cot_k": 2.5}, "cot_k"),
                                   ({"do_sample": True}, "do_sample"),
                                   ({"num_return_sequences": 2}, "num_return_sequences")])
def test_bad_settings_are_refused(d, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        build_strategy({"name": "cot", "method": "cot_decoding", **d})


def test_cli_refuses_zero_branches_before_loading():
    r = subprocess.run([sys.executable, "-m", "decodebench", "strategy=cot_decoding", "strategy.cot_k=0",
                        "model=tiny", "logger=none"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "cot_k must be an integer >= 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name,points", [("cot_decoding", 6), ("deepconf", 6), ("power_sampling", 4)])
def test_shipped_config_and_sweep_grid_plan(name, points):
    from decodebench.sweep.plan import make_plan
    from tests.conftest import compose

    plan = make_plan(to_specs(compose([f"strategy={name}", f"sweep={name}", "model=tiny"])))
    assert len(plan.points) == points
    assert {p.spec.method for p in plan.points} == {name}


def test_more_branches_than_the_vocabulary_are_refused():
    from decodebench.decoding.search.cot_decoding import _check_model

    model, _ = peaky_tiny()
    spec = build_strategy({"name": "cot", "method": "cot_decoding", "cot_k": 10**6})
    with pytest.raises(ValueError, match="^cot_k must be <= the model's vocabulary"):
        _check_model(spec, model)
