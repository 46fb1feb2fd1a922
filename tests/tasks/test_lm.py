"""decodebench as an lm-eval model, against lm-eval's own `hf` model on the same weights."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

lm_eval = pytest.importorskip("lm_eval")

ARITH = "decodebench_arith"


@pytest.fixture(scope="module")
def local_tasks():
    from lm_eval.tasks import TaskManager

    from decodebench.tasks import TASKS_DIR

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def _evaluate(lm, tm, limit, **kw):
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return lm_eval.simple_evaluate(model=lm, tasks=[ARITH], task_manager=tm, limit=limit, log_samples=True, **kw)


def _responses(res, task=ARITH):
    return [(s["doc_id"], s["filter"], s["resps"]) for s in res["samples"][task]]


@pytest.mark.slow
def test_greedy_matches_lm_eval_hf_model_sample_for_sample(embedded, local_tasks):
    """Same generations and same accuracy as lm-eval's `hf` model on the embedded weights; above chance."""
    from lm_eval.models.huggingface import HFLM

    from decodebench.tasks.lm import DecodebenchLM

    model, tok = embedded
    ours = _evaluate(DecodebenchLM(model=model, tokenizer=tok, batch_size=8), local_tasks, 16)
    ref = _evaluate(HFLM(pretrained=model, tokenizer=tok, batch_size=1), local_tasks, 16)
    assert _responses(ours) == _responses(ref)
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert ours["results"][ARITH][key] == ref["results"][ARITH][key]
    # the most frequent answer of the 200 problems is right 13.5% of the time
    assert ours["results"][ARITH]["exact_match,strict-match"] > 0.3


def test_loglikelihoods_match_lm_eval_hf_model(tiny):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from decodebench.tasks.lm import DecodebenchLM

    model, tok = tiny
    pairs = [("Question: 2 + 2 =", " 4"), ("abc", "def ghi"), ("", "hello world"), ("x" * 40, " y")]
    ll = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(["hello there " * 30, "a b"])]
    ours = DecodebenchLM(model=model, tokenizer=tok, batch_size=3, max_length=64)
    ref = HFLM(pretrained=model, tokenizer=tok, batch_size=1, max_length=64)
    got, want = ours.loglikelihood(ll), ref.loglikelihood(ll)
    assert [g for _, g in got] == [g for _, g in want]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in want], rel=1e-4, abs=1e-4)
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(ref.loglikelihood_rolling(rolling), rel=1e-4)


def test_repeats_reproduce_at_any_batch_size(tiny, local_tasks):
    """Sampled `repeats`: the same N samples per question whatever the batch size; the samples differ."""
    from decodebench.tasks.lm import DecodebenchLM

    model, tok = tiny
    outs = []
    for bs in (1, 5):
        loaded = local_tasks.load([ARITH])
        for t in loaded["tasks"].values():
            t.set_config(key="repeats", value=3)
            t.set_fewshot_seed(seed=1234)  # the same few-shot prompts both times (simple_evaluate's default)
        lm = DecodebenchLM(model=model, tokenizer=tok, strategy="topp", temperature=1.0, batch_size=bs, seed=7)
        from lm_eval.evaluator import evaluate

        outs.append(_responses(evaluate(lm=lm, task_dict=loaded, limit=4, log_samples=True)))
    assert outs[0] == outs[1]
    first = outs[0][0][2][0]
    assert len(first) == 3 and len(set(first)) > 1


def test_strategy_by_name_with_overrides_and_errors(tiny):
    from decodebench.tasks.lm import DecodebenchLM

    model, tok = tiny
    lm = DecodebenchLM(model=model, tokenizer=tok, strategy="minp", min_p="0.2")
    assert lm.strategy["min_p"] == 0.2 and lm.strategy["name"] == "minp"
    with pytest.raises(ValueError, match="did you mean 'minp'"):
        DecodebenchLM(model=model, tokenizer=tok, strategy="minpp")
    with pytest.raises(ValueError, match="top_p"):
        DecodebenchLM(model=model, tokenizer=tok, strategy="topp", top_p=1.5)


def test_registered_for_lm_eval_by_name():
    from lm_eval.api.registry import get_model

    from decodebench.tasks import register_model
    from decodebench.tasks.lm import DecodebenchLM

    register_model()
    assert get_model("decodebench") is DecodebenchLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models are still there
