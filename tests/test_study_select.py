"""Fair selection without a model: the split by prompt id, the paired test against scipy, choosing on dev
and reporting on test, and per-prompt objective values against the scorer plan run on one prompt."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from decodebench.scorers import resolve_scorers
from decodebench.sweep.select import PointScore, bootstrap_ci, select, sign_flip_p, split_ids
from decodebench.sweep.study_scores import objective_entry, per_prompt_values


def test_split_is_by_id_deterministic_and_sized():
    ids = [f"p{i:02d}" for i in range(20)]
    dev, test = split_ids(ids, 0.25, seed=3)
    assert len(dev) == 5 and len(test) == 15 and set(dev) | set(test) == set(ids) and not set(dev) & set(test)
    rdev, rtest = split_ids(list(reversed(ids)), 0.25, seed=3)  # the order of the prompts does not matter
    assert set(rdev) == set(dev) and set(rtest) == set(test)
    assert set(split_ids(ids, 0.25, seed=4)[0]) != set(dev)  # the salt does
    assert split_ids(ids[:5], 0.25, seed=3)[0] == [i for i in ids[:5] if i in set(split_ids(ids[:5], 0.25, 3)[0])]
    assert [len(x) for x in split_ids(["a", "b"], 0.01)] == [1, 1]  # never an empty side
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_ids(["a"], 0.5)


@pytest.mark.parametrize("n", [6, 11])
def test_sign_flip_p_equals_scipys_exact_paired_permutation_test(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n) + 0.4
    want = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                  alternative="two-sided", n_resamples=np.inf).pvalue
    assert sign_flip_p(a - b) == pytest.approx(want, abs=1e-12)


def test_sign_flip_p_monte_carlo_above_the_exact_limit():
    rng = np.random.default_rng(0)
    d = rng.normal(size=40) + 0.5
    p = sign_flip_p(d, resamples=20000, seed=1)
    want = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20000,
                                  random_state=2).pvalue
    assert p == pytest.approx(want, abs=5e-3) and p < 0.05
    assert sign_flip_p(np.zeros(5)) == 1.0


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    low, high = bootstrap_ci(x, 2000, seed=0)
    assert low < x.mean() < high
    wide = bootstrap_ci(x[:20], 2000, seed=0)
    assert wide[1] - wide[0] > high - low
    assert all(np.isnan(bootstrap_ci(x, 0)))


def _pt(name, method, dev, per_prompt):
    return PointScore(name, method, name, dev, float(np.mean(list(per_prompt.values()))), per_prompt)


def test_select_chooses_on_dev_reports_on_test_and_pairs_against_the_best():
    test = ["t1", "t2", "t3", "t4", "t5"]
    pts = [  # topp's best setting on test (0.9) is not its best on dev (0.8): the dev one is reported
        _pt("topp,0.8", "topp", 0.7, dict(zip(test, [0.5, 0.6, 0.5, 0.6, 0.5]))),
        _pt("topp,0.9", "topp", 0.6, dict(zip(test, [0.9, 0.9, 0.9, 0.9, 0.9]))),
        _pt("minp,0.1", "minp", 0.5, dict(zip(test, [0.7, 0.8, 0.7, 0.8, 0.9]))),
        _pt("greedy", "greedy", 0.2, dict(zip(test, [0.1, 0.2, 0.1, 0.2, 0.1]))),
    ]
    got = {c.method: c for c in select(pts, test, maximize=True, resamples=500)}
    assert got["topp"].point.name == "topp,0.8" and got["topp"].budget == 2
    assert got["topp"].sensitivity == pytest.approx(0.1)
    assert got["minp"].best and not got["topp"].best and np.isnan(got["minp"].p_value)
    d = np.array([0.5, 0.6, 0.5, 0.6, 0.5]) - np.array([0.7, 0.8, 0.7, 0.8, 0.9])
    assert got["topp"].diff == pytest.approx(d.mean()) and got["topp"].p_value == pytest.approx(sign_flip_p(d))
    assert got["topp"].p_value == pytest.approx(2 / 32)  # every difference negative: 2 of 2^5 flips as extreme
    low, high = got["topp"].test_ci
    assert low <= got["topp"].point.test <= high
    lower = {c.method: c for c in select(pts, test, maximize=False)}
    assert lower["topp"].point.name == "topp,0.9" and lower["greedy"].best


def test_per_prompt_values_equal_the_plan_on_each_prompt_alone():
    plan = resolve_scorers({"names": ["rep_w", "answer_match"], "bootstrap": {"samples": 0}})
    recs = [{"prompt_id": p, "sample_index": s, "text": t, "reference": r} for p, s, t, r in [
        ("a", 0, "the cat the cat sat 4", "2 + 2 = 4"), ("a", 1, "a b c d 5", "2 + 2 = 4"),
        ("b", 0, "one two one two one 7", "3 + 4 = 7"), ("b", 1, "x y z 7", "3 + 4 = 7")]]
    common = dict(model=None, tokenizer=None, device=None, seed=0, progress=False)
    for metric in ("rep_w", "answer_match"):
        scorer, options, name = objective_entry(plan, metric)
        got = per_prompt_values(recs, scorer, options, name, common)
        for pid in ("a", "b"):  # the plan on one prompt's rows: mean over its samples, as the study reads it
            want = plan.score([r for r in recs if r["prompt_id"] == pid], progress=False)[metric]
            assert got[pid] == pytest.approx(want)
    assert per_prompt_values(recs, *objective_entry(plan, "answer_match"), common) == {"a": 0.5, "b": 1.0}
