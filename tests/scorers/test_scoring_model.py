"""A scoring model other than the one that generated: `scorers.<scorer>.model=<name>`, loaded by the caller
and passed to `ScorerPlan.score(models=...)`; the scorer re-tokenizes prompts and texts with its own
tokenizer, never the records' token ids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decodebench import models, results
from decodebench.scorers import resolve_scorers
from tests.conftest import compose
from tests.scorers.test_model_metrics import independent_logprobs


def plan(names, **options):
    return resolve_scorers({"names": names, "bootstrap": {"samples": 0}, **options})


def pooled_perplexity(model, tokenizer, records, field="text") -> float:
    records = [r.to_json() if isinstance(r, results.GenerationRecord) else r for r in records]
    logps = [independent_logprobs(model, tokenizer, r["prompt"], r[field]) for r in records]
    return math.exp(-sum(lp.sum() for lp in logps) / sum(lp.size for lp in logps))


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A second tiny byte-level Llama (seed 1), saved like a local checkpoint."""
    model, tok = models.tiny_model(seed=1)
    path = tmp_path_factory.mktemp("scorer_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def other(other_dir):
    return models.load_model(models.ModelConfig(name_or_path=other_dir), device="cpu", dtype="float32")


def with_generating_ids(records, tokenizer):
    """The records as a run writes them: the generating tokenizer's prompt and continuation ids."""
    return [dict(r, prompt_token_ids=tokenizer(r["prompt"])["input_ids"] if r["prompt"] else [],
                 token_ids=tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in records]


def test_perplexity_under_another_model_equals_the_independent_computation(tiny_lm, lm_records, other_dir, other):
    model, tokenizer = tiny_lm  # generates (BPE tokenizer); the scoring model has a byte tokenizer
    records = with_generating_ids(lm_records, tokenizer)
    p = plan(["perplexity", "reference_perplexity"], perplexity={"model": other_dir},
             reference_perplexity={"model": other_dir})
    assert p.scoring_models() == {other_dir}
    m = p.score(records, model=model, tokenizer=tokenizer, progress=False, models={other_dir: other})
    assert m["perplexity"] == pytest.approx(pooled_perplexity(*other, records), rel=1e-5)
    assert m["reference_perplexity"] == pytest.approx(pooled_perplexity(*other, records, "reference"), rel=1e-5)
    assert m["perplexity"] != pytest.approx(pooled_perplexity(model, tokenizer, records), rel=1e-3)


def test_coherence_and_perplexity_under_different_models_do_not_share_log_probs(tiny_lm, lm_records, other_dir,
                                                                                 other):
    model, tokenizer = tiny_lm
    records = with_generating_ids(lm_records, tokenizer)
    both = plan(["perplexity", "coherence"], coherence={"model": other_dir, "bos": "tokenizer"},
                perplexity={"bos": "tokenizer"})
    m = both.score(records, model=model, tokenizer=tokenizer, progress=False, models={other_dir: other})
    own = plan(["perplexity"]).score(records, model=model, tokenizer=tokenizer, progress=False)
    assert m["perplexity"] == pytest.approx(own["perplexity"], rel=1e-9)
    expected = np.mean([lp.mean() for r in records
                        if (lp := independent_logprobs(*other, r["prompt"], r["text"])).size])
    assert m["coherence"] == pytest.approx(expected, rel=1e-5)


def test_without_the_option_nothing_changes(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    p = plan(["perplexity", "coherence"])
    assert p.scoring_models() == set()
    assert p.describe()["perplexity"]["model"] == ""
    a = p.score(lm_records, model=model, tokenizer=tokenizer, progress=False)
    b = p.score(lm_records, model=model, tokenizer=tokenizer, progress=False, models={})
    assert a == b
    assert a["perplexity"] == pytest.approx(pooled_perplexity(model, tokenizer, lm_records), rel=1e-5)


def test_a_bad_model_value_is_a_one_line_error():
    with pytest.raises(ValueError) as e:
        plan(["perplexity"], perplexity={"model": 3})
    assert str(e.value) == "scorers.perplexity.model must be a string; got 3"


def test_an_override_missing_from_models_is_a_one_line_error(tiny_lm, lm_records):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="scorers.perplexity.model is 'elsewhere'") as e:
        plan(["perplexity"], perplexity={"model": "elsewhere"}).score(
            lm_records, model=model, tokenizer=tokenizer, progress=False)
    assert "\n" not in str(e.value)


def test_an_override_needs_no_generating_model(lm_records, other_dir, other):
    m = plan(["perplexity"], perplexity={"model": other_dir}).score(
        lm_records, progress=False, models={other_dir: other})
    assert m["perplexity"] == pytest.approx(pooled_perplexity(*other, lm_records), rel=1e-5)


def test_run_end_to_end_scores_under_the_named_model(tmp_path, other_dir, other):
    from decodebench.cli.entry import run

    common = ["model=tiny", "scorers.names=[perplexity]", "logger=none", "progress=false", "dataset.limit=2",
              "strategy.max_new_tokens=4"]
    res = run(compose(common + [f"++scorers.perplexity.model={other_dir}"]), str(tmp_path / "other"))
    records = results.read_generations(res["run_dir"])
    assert res["metrics"]["perplexity"] == pytest.approx(pooled_perplexity(*other, records), rel=1e-5)
    own = run(compose(common), str(tmp_path / "own"))["metrics"]["perplexity"]
    assert res["metrics"]["perplexity"] != pytest.approx(own, rel=1e-3)
