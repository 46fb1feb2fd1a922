"""Selectors over a prompt's samples, against hand-computed cases; their bad input; a run that writes
selected.jsonl and scores both the selected and all outputs."""

from __future__ import annotations

import json

import pytest

from decodebench import selectors as S
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs


def _recs(texts, pid="p", ids=None):
    return [{"prompt_id": pid, "sample_index": i, "text": t, "prompt": "q", "prompt_token_ids": [1, 2],
             "token_ids": (ids[i] if ids else [3])} for i, t in enumerate(texts)]


def test_extractors_by_hand():
    assert S.last_number("so 3 apples and 1,200.0 pears") == "1200"
    assert S.last_number("no digits") is None
    assert S.boxed(r"thus \boxed{\frac{1}{2}} and \boxed{7}") == "7"


def test_self_consistency_vote_and_ties():
    search = {"selector": "self_consistency", "extractor": "last_number"}
    # answers: 4, 5, 5, None, 4 -> 4 and 5 tie with 2 votes; 4 was seen first, sample 0 carries it
    recs = _recs(["it is 4", "maybe 5", "5 it is", "no idea", "answer: 4"])
    (rec,) = S.select_records(recs, search)
    assert rec["selected_sample_index"] == 0 and rec["selection"]["answer"] == "4"
    assert rec["selection"]["votes"] == 2 and rec["sample_index"] == 0
    # a clear majority picks its first sample
    (rec,) = S.select_records(_recs(["7", "the answer is 9", "9", "9."]), search)
    assert (rec["selected_sample_index"], rec["selection"]["answer"], rec["selection"]["votes"]) == (1, "9", 3)


def test_self_consistency_regex_group_and_last_match():
    search = {"selector": "self_consistency", "answer_pattern": r"Answer: (\w+)"}
    recs = _recs(["Answer: no. Answer: yes", "Answer: no", "Answer: yes", "nothing"])
    (rec,) = S.select_records(recs, search)
    # per-sample answers: yes (last match), no, yes, None -> yes (2 votes), first at sample 0
    assert rec["selection"]["answers"] == ["yes", "no", "yes", None]
    assert rec["selected_sample_index"] == 0


def test_best_of_n_reward_and_groups():
    S.REWARDS._items.pop("test_len", None)
    S.register_reward("test_len")(lambda prompt, text: -abs(len(text) - 3))
    search = {"selector": "best_of_n", "reward": "test_len"}
    recs = _recs(["a", "abcd", "abc", "xyz"], pid="p") + _recs(["zz", "z"], pid="q")
    out = S.select_records(recs, search)
    # p: rewards -2, -1, 0, 0 -> sample 2 (ties go to the earliest); q: -1, -2 -> sample 0
    assert [(r["prompt_id"], r["selected_sample_index"]) for r in out] == [("p", 2), ("q", 0)]
    assert out[0]["selection"]["scores"] == [-2.0, -1.0, 0.0, 0.0]
    S.REWARDS._items.pop("test_len")


def test_best_of_n_mean_logprob_against_the_model(tiny):
    import torch

    model, tok = tiny
    ids = [[5, 6, 7], [9, 9], [40, 41, 42, 43]]
    recs = _recs(["a", "b", "c"], ids=ids)
    (rec,) = S.select_records(recs, {"selector": "best_of_n", "reward": None}, model, tok)
    means = []
    with torch.no_grad():
        for cont in ids:  # the slow reference: one unbatched forward per sample
            full = torch.tensor([[1, 2] + cont])
            lp = model(input_ids=full).logits.log_softmax(-1)[0, 1:-1]
            means.append(float(lp.gather(-1, full[0, 2:, None]).mean()))
    assert rec["selection"]["scores"] == pytest.approx(means, abs=1e-5)
    assert rec["selected_sample_index"] == max(range(3), key=lambda k: means[k])


def test_mbr_chrf_and_bleu_by_sacrebleu():
    pytest.importorskip("mbrs")
    from sacrebleu.metrics import BLEU, CHRF

    texts = ["the cat sat on the mat", "the cat sat on a mat", "a dog ran in the park", "the cat sat"]
    for utility, metric in (("chrf", CHRF()), ("bleu", BLEU(effective_order=True))):
        (rec,) = S.select_records(_recs(texts), {"selector": "mbr", "mbr_utility": utility})
        expected = [sum(metric.sentence_score(h, [r]).score for r in texts) / len(texts) for h in texts]
        assert rec["selection"]["expected_utility"] == pytest.approx(expected, abs=1e-3)
        assert rec["selected_sample_index"] == max(range(4), key=lambda k: expected[k])


@pytest.mark.parametrize("extra, msg", [
    ({"selector": "self_consistency", "extractor": "last_number"},
     "num_return_sequences must be > 1 for selector=self_consistency"),
    ({"selector": "self_consistency", "extractor": "last_nuber", "num_return_sequences": 4},
     "did you mean 'last_number'"),
    ({"selector": "self_consistency", "num_return_sequences": 4}, "answer_pattern or extractor must be set"),
    ({"selector": "best_of_m", "num_return_sequences": 4}, "did you mean 'best_of_n'"),
    ({"selector": "mbr", "mbr_utility": "comet", "num_return_sequences": 4}, "mbr_utility must be one of"),
    ({"selector": "best_of_n", "reward": "nope", "num_return_sequences": 4}, "unknown reward function"),
])
def test_bad_selector_settings(extra, msg):
    with pytest.raises(ValueError, match=msg) as e:
        build_strategy({"name": "sample", "do_sample": True, **extra})
    assert "\n" not in str(e.value)


def test_cli_bad_extractor_exits_2(cfg_of):
    from decodebench.config import ConfigError
    from decodebench.runner import prepare

    cfg = cfg_of(["strategy=sample", "strategy.num_return_sequences=3", "strategy.selector=self_consistency",
                  "strategy.extractor=boxd", "logger=none"])
    with pytest.raises(ConfigError,
                       match=r"^strategy\.extractor names an unknown answer extractor 'boxd'; did you mean"):
        prepare(to_specs(cfg))


def test_run_writes_selected_and_scores_both(cfg_of, tmp_path):
    from decodebench.runner import execute

    cfg = cfg_of(["model=tiny", "strategy=sample", "strategy.num_return_sequences=3", "strategy.max_new_tokens=4",
                  "strategy.selector=best_of_n", "dataset.limit=2", "logger=none", "progress=false",
                  "scorers.names=[gen_length]", "scorers.bootstrap.samples=0"])
    res = execute(to_specs(cfg), tmp_path)
    sel = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text().splitlines()]
    gens = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(sel) == 2 and len(gens) == 6
    for r in sel:
        src = next(g for g in gens if g["prompt_id"] == r["prompt_id"]
                   and g["sample_index"] == r["selected_sample_index"])
        assert r["text"] == src["text"]
    m = res["metrics"]
    assert m["selected_gen_length"] == pytest.approx(sum(len(r["text"].split()) for r in sel) / 2)
    assert "gen_length" in m
    for r in sel:  # the chosen sample has the best mean log-prob of its prompt's three
        scores = r["selection"]["scores"]
        assert scores[r["selected_sample_index"]] == max(scores)
