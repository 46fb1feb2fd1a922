"""Every diversity, generation length and rep-n figure of PUBLISHED.md, reproduced from the released
generations with the default settings (figures in percent there, fractions here)."""

from __future__ import annotations

import pytest

from decodebench.scorers import load_generations, resolve_scorers

# method: (diversity per run, diversity mean, generation length mean), from PUBLISHED.md
PUBLISHED = {
    "greedy": ([5.38], 5.38, 147.28),
    "beam": ([4.04], 4.04, 137.55),
    "topk": ([91.33, 91.39, 91.27], 91.33, 142.48),
    "nucleus": ([93.60, 93.53, 93.70], 93.61, 139.49),
    "typical": ([87.80, 88.12, 88.03], 87.98, 142.11),
    "contrastive": ([92.54], 92.54, 140.72),
}
FIRST_RUN_REP = {"greedy": (65.04, 61.80, 59.68), "beam": (67.77, 65.41, 63.79), "contrastive": (4.77, 1.73, 1.11)}
HUMAN_DIVERSITY = 93.62

PLAN = resolve_scorers({"names": ["rep", "gen_length"], "bootstrap": {"samples": 0}})


def percent(x: float) -> float:
    return round(x * 100, 2)


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_diversity_and_length_of_every_run(webtext, method):
    per_run, mean_diversity, mean_length = PUBLISHED[method]
    records = load_generations(webtext / f"{method}.json")
    runs = sorted({r.sample_index for r in records})
    assert len(runs) == len(per_run)
    got = [percent(PLAN.score([r for r in records if r.sample_index == s], progress=False)["diversity"])
           for s in runs]
    assert got == per_run
    overall = PLAN.score(records, progress=False)
    assert percent(overall["diversity"]) == mean_diversity
    # the authors round the mean over runs of the per-run mean length to 2 decimals
    assert round(overall["gen_length"], 2) == mean_length
    assert ("diversity_std" in overall) == (len(runs) > 1)


@pytest.mark.parametrize("method", sorted(FIRST_RUN_REP))
def test_rep_n_of_first_run(webtext, method):
    records = [r for r in load_generations(webtext / f"{method}.json") if r.sample_index == 0]
    m = PLAN.score(records, progress=False)
    assert (percent(m["rep_2"]), percent(m["rep_3"]), percent(m["rep_4"])) == FIRST_RUN_REP[method]


def test_human_reference_diversity(webtext):
    plan = resolve_scorers({"names": ["reference_rep"], "bootstrap": {"samples": 0}})
    m = plan.score(load_generations(webtext / "nucleus.json"), progress=False)
    assert percent(m["reference_diversity"]) == HUMAN_DIVERSITY
    assert "reference_diversity_std" not in m  # one reference per prompt, scored once


def test_plain_protocol_counts_every_ngram(webtext):
    """The `plain` option counts each text's last n-gram too and does not round: close to, not equal to,
    the published figures."""
    records = [r for r in load_generations(webtext / "greedy.json") if r.sample_index == 0]
    plain = resolve_scorers({"names": ["rep"], "rep": {"protocol": "plain"}, "bootstrap": {"samples": 0}})
    m = plain.score(records, progress=False)
    assert percent(m["rep_2"]) != 65.04 and abs(m["rep_2"] - 0.6504) < 0.002
    assert m["diversity"] == pytest.approx((1 - m["rep_2"]) * (1 - m["rep_3"]) * (1 - m["rep_4"]))
