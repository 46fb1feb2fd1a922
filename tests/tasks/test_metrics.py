"""maj@N, pass@k and the names task metrics get in metrics.json."""

from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from decodebench.tasks import metrics as M  # noqa: E402


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (10, 3, 5), (20, 19, 2), (4, 0, 4)])
def test_pass_at_k_is_chen_et_al_combinatorial_formula(n, c, k):
    assert M.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_majority_is_most_frequent_and_first_on_ties():
    assert M.majority(["3", "5", "5", "3", "7"]) == "3"
    assert M.majority(["1", "2", "2"]) == "2"


def test_lm_eval_results_flattened_with_filters_and_interval():
    res = {"results": {"t": {"alias": "t", "exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1,
                             "acc,none": 0.25, "acc_stderr,none": "N/A"}}}
    out = M.lm_eval_metrics(res)
    assert out["task/t/exact_match/strict-match"] == 0.5
    assert out["task/t/exact_match/strict-match_ci_low"] == pytest.approx(0.5 - 1.959964 * 0.1)
    assert out["task/t/acc"] == 0.25 and "task/t/acc_stderr" not in out
    assert M.higher_is_better("task/t/acc") is True and M.higher_is_better("task/t/word_perplexity") is False
    assert M.higher_is_better("diversity") is None


def test_maj_at_n_votes_on_filtered_answers_with_the_tasks_metric():
    """Real task, hand-made responses: the vote reads the answer through the task's filter."""
    from lm_eval.tasks import TaskManager

    from decodebench.tasks import TASKS_DIR

    task = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(["decodebench_arith"])["tasks"]
    task = next(iter(task.values()))
    docs = list(task.test_docs())[:2]
    right0, right1 = docs[0]["answer"], docs[1]["answer"]
    samples = [  # doc 0: the majority is right though the first sample is wrong; doc 1: majority wrong
        {"filter": "strict-match", "doc": docs[0], "resps": [[" 1 + 1 = 99", f" x = {right0}", f" = {right0} ok"]]},
        {"filter": "strict-match", "doc": docs[1], "resps": [[f" = {right1}", " = 0", " = 0"]]},
    ]
    out = M.maj_at_n("arith", task, samples, 3)
    assert out["task/arith/maj@3/exact_match/strict-match"] == 0.5
    assert out["task/arith/maj@3/exact_match/strict-match_stderr"] == pytest.approx(0.5)
