"""Contrastive search against a slow plain implementation: one prompt at a time, no KV cache, every
candidate's hidden state recomputed from the full sequence, the score written out from Su et al. 2022."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


@torch.inference_mode()
def slow_contrastive(model, prompt: list[int], k: int, alpha: float, n_new: int, eos: int,
                     repetition_penalty: float | None = None) -> list[int]:
    ids = list(prompt)
    out: list[int] = []
    for _ in range(n_new):
        res = model(torch.tensor([ids]), output_hidden_states=True)
        logits = res.logits[0, -1].float()
        if repetition_penalty is not None:  # HF's processor, on the prompt + generated ids
            from transformers import RepetitionPenaltyLogitsProcessor

            logits = RepetitionPenaltyLogitsProcessor(repetition_penalty)(torch.tensor([ids]), logits[None])[0]
        context = res.hidden_states[-1][0]  # [S, H], the prompt included
        probs = logits.softmax(-1)
        top_p, top_ids = probs.topk(k)
        best, best_score = None, None
        cands = torch.tensor([ids + [v] for v in top_ids.tolist()])  # k full sequences, no cache
        last = model(cands, output_hidden_states=True).hidden_states[-1][:, -1]
        for p, v, h in zip(top_p.tolist(), top_ids.tolist(), last):
            sim = max(torch.nn.functional.cosine_similarity(h, c, dim=0).item() for c in context)
            score = (1 - alpha) * p - alpha * sim
            if best_score is None or score > best_score:
                best, best_score = v, score
        out.append(best)
        ids.append(best)
        if best == eos:
            break
    return out


def run(model, tok, texts, d, batch_size=64, **kw):
    spec = build_strategy({"name": "c", "method": "contrastive", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    return generate(model, tok, reqs, spec, batch_size=batch_size, **kw)


@pytest.mark.parametrize("k,alpha", [(5, 0.6), (3, 0.0), (4, 1.0), (1, 0.5), (8, 0.3)])
def test_contrastive_equals_slow_reference(k, alpha):
    model, tok = peaky_tiny()
    texts = TEXTS[:4]
    outs, _ = run(model, tok, texts, dict(top_k=k, penalty_alpha=alpha, max_new_tokens=10))
    for x, o in zip(texts, outs):
        ref = slow_contrastive(model, tok(x)["input_ids"], k, alpha, 10, tok.eos_token_id)
        assert o.token_ids == ref
        assert o.finish_reason == ("eos" if ref[-1] == tok.eos_token_id else "length")


def test_contrastive_with_a_transform_and_small_batches():
    model, tok = peaky_tiny()
    texts = TEXTS
    d = dict(top_k=4, penalty_alpha=0.6, max_new_tokens=8, repetition_penalty=1.5)
    full, _ = run(model, tok, texts, d)
    for x, o in zip(texts, full):
        assert o.token_ids == slow_contrastive(model, tok(x)["input_ids"], 4, 0.6, 8, tok.eos_token_id, 1.5)
    split, _ = run(model, tok, texts, d, batch_size=2)
    assert [o.token_ids for o in split] == [o.token_ids for o in full]


def test_alpha_zero_is_greedy():
    model, tok = peaky_tiny()
    a, _ = run(model, tok, TEXTS, dict(top_k=4, penalty_alpha=0.0, max_new_tokens=10))
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"]) for i, x in enumerate(TEXTS)]
    g, _ = generate(model, tok, reqs, build_strategy({"name": "greedy", "max_new_tokens": 10}), batch_size=64)
    assert [o.token_ids for o in a] == [o.token_ids for o in g]


def test_forward_accounting_counts_every_candidate():
    model, tok = peaky_tiny()
    texts = ["hello world, this is longer", "The cat", "q"]
    outs, stats = run(model, tok, texts, dict(top_k=5, penalty_alpha=0.6, max_new_tokens=6))
    width = max(len(tok(x)["input_ids"]) for x in texts)
    assert stats.steps == max(len(o.token_ids) for o in outs)
    assert stats.forward_passes == 1 + stats.steps  # prefill, then one forward of all k candidates per step
    assert stats.tokens_processed == 3 * width + stats.steps * 3 * 5
    assert stats.tokens_processed / stats.generated_tokens > 5


def test_contrastive_equals_slow_reference_on_embedded_model(embedded, cfg_of):
    """The issue's acceptance line: strategy=contrastive top_k=5 penalty_alpha=0.6."""
    from decodebench.config import validate

    model, tok = embedded
    spec = validate(to_specs(cfg_of(["strategy=contrastive", "strategy.top_k=5", "strategy.penalty_alpha=0.6",
                            "strategy.max_new_tokens=8"])))
    texts = ["In 1854, the city of London", "Photosynthesis is"]
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=8)
    for x, o in zip(texts, outs):
        assert o.token_ids == slow_contrastive(model, tok(x)["input_ids"], 5, 0.6, 8, tok.eos_token_id)
