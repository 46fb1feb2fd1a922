"""lm-eval gen_kwargs -> decodebench strategies."""

from __future__ import annotations

import pytest

from decodebench.tasks.strategy import gen_kwargs_strategy, load_strategy, request_strategy


def test_lm_eval_greedy_request_is_greedy_with_its_budget_and_stops():
    spec = request_strategy(None, {"do_sample": False, "temperature": 0.0, "max_gen_toks": 12}, ["\n", "Q:", ""])
    assert not spec.params.do_sample and spec.params.temperature is None
    assert spec.max_new_tokens == 12 and spec.stop == ("\n", "Q:")


def test_sampling_gen_kwargs_keep_generationconfig_names():
    d = gen_kwargs_strategy({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_gen_toks": 5})
    assert d == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "name": "sample"}
    spec = request_strategy(None, {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_gen_toks": 5}, [])
    assert spec.params.top_p == 0.9 and spec.params.temperature == 0.7 and spec.max_new_tokens == 5


def test_a_strategy_wins_over_the_tasks_sampling_settings_but_not_its_stops():
    base = load_strategy("topp", {"temperature": 0.5})
    spec = request_strategy(base, {"do_sample": False, "temperature": 0.0, "max_gen_toks": 9}, ["\n\n"])
    assert spec.params.do_sample and spec.params.top_p == 0.95 and spec.params.temperature == 0.5
    assert spec.max_new_tokens == 9 and spec.stop == ("\n\n",)


def test_unknown_gen_kwarg_is_named():
    with pytest.raises(ValueError, match="gen_kwargs: .*foo"):
        request_strategy(None, {"do_sample": True, "foo": 1, "max_gen_toks": 4}, [])


def test_no_strategy_means_gen_kwargs_decide():
    assert load_strategy(None, {}) is None
