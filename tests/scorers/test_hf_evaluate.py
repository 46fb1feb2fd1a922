"""The Hugging Face `evaluate` modules load offline by local path and give the scorers' numbers."""

from __future__ import annotations

import pytest

from decodebench.hf_evaluate import module_path
from decodebench.scorers import resolve_scorers

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


TEXTS = ["a b c a b c a b c", "the cat sat on the mat and the dog sat too", "", "one two three four five six"]
REFS = ["x y z", "a b", "c d e f", "g h i j k"]


def test_text_module_matches_the_scorers():
    metric = evaluate.load(module_path("decodebench_text"))
    got = metric.compute(predictions=TEXTS, references=REFS)
    records = [{"prompt_id": i, "text": t, "reference": r} for i, (t, r) in enumerate(zip(TEXTS, REFS))]
    names = ["rep", "gen_length", "distinct", "seq_rep", "rep_w", "rep_r", "repetition_loop", "self_bleu",
             "compression_ratio", "zipf", "reference_rep"]
    expected = resolve_scorers({"names": names, "bootstrap": {"samples": 0}}).score(records, progress=False)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], nan_ok=True) for k in expected)
    only = metric.compute(predictions=TEXTS, scorers=["self_bleu_4"], options={"self_bleu": {"max_hypotheses": 2}})
    assert list(only) == ["self_bleu_4"]


def test_perplexity_module_by_object_and_by_local_path(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    prompts = ["The quick brown fox", "She said"]
    texts = [" jumps over the lazy dog.", " the results were surprising."]
    records = [{"prompt_id": i, "prompt": p, "text": t} for i, (p, t) in enumerate(zip(prompts, texts))]
    expected = resolve_scorers({"names": ["perplexity"], "bootstrap": {"samples": 0}}).score(
        records, model=model, tokenizer=tokenizer, progress=False)["perplexity"]
    metric = evaluate.load(module_path("decodebench_perplexity"))
    by_object = metric.compute(predictions=texts, prompts=prompts, model=model, tokenizer=tokenizer)
    assert by_object["perplexity"] == pytest.approx(expected, rel=1e-6)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    by_path = metric.compute(predictions=texts, prompts=prompts, model_id=str(tmp_path / "tiny"))
    assert by_path["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_unknown_module_name():
    with pytest.raises(ValueError, match="known: decodebench_perplexity, decodebench_text"):
        module_path("decodebench_txt")
