"""The config, the plan, statistics over runs and prompts, loading records, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from decodebench.scorers import SCORERS, higher_is_better, load_generations, resolve_scorers, score_file

CONF = Path(__file__).resolve().parents[2] / "conf" / "scorers"


def one_line_error(cfg: dict, match: str) -> str:
    with pytest.raises(ValueError, match=match) as err:
        resolve_scorers(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_config_errors_are_one_line_and_name_the_key():
    assert "did you mean 'self_bleu'" in one_line_error({"names": ["self_bleau"]}, "unknown scorer")
    assert "max_hypotheses" in one_line_error({"self_bleu": {"max_hypothesis": 3}}, "unknown option")
    one_line_error({"self_bleu": {"max_hypotheses": "many"}}, r"scorers\.self_bleu\.max_hypotheses must be an integer")
    one_line_error({"self_bleu": {"max_hypotheses": 0}}, r"scorers\.self_bleu\.max_hypotheses must be >= 1")
    one_line_error({"rep": {"protocol": "simctg"}}, r"scorers\.rep\.protocol must be one of published, plain")
    one_line_error({"rep_w": {"window": True}}, "must be an integer")
    one_line_error({"names": "everything"}, "scorers.names must be a list")
    one_line_error({"bootstrap": {"sampels": 10}}, "did you mean 'samples'")
    one_line_error({"bootstrap": {"confidence": 1.5}}, r"confidence must be in \(0, 1\)")
    one_line_error({"repp": {}}, "did you mean 'rep'")
    one_line_error({"bootstrap": {"samples": 0}}, "scorers.names is missing")
    one_line_error({"names": ["gen_length"], "gen_length": {"unit": "word"}}, "scorers.gen_length takes no options")


def test_names_accept_metric_names_and_all():
    plan = resolve_scorers({"names": ["diversity", "rep_3", "self_bleu_4", "perplexity"]})
    assert plan.names == ["rep", "self_bleu", "perplexity"]
    assert plan.needs_model and not plan.needs_references
    # "all": every scorer but those that need the run's own settings (a constraint, watermark keys) or answers
    # with integers (answer_match)
    assert resolve_scorers({"names": "all"}).names == [n for n in SCORERS.names() if n not in ("constraint_valid", "watermark", "answer_match")]
    text_only = resolve_scorers({"names": ["mauve"]})
    assert text_only.needs_model and text_only.needs_references


@pytest.mark.parametrize("name", ["default", "text", "all"])
def test_shipped_configs_resolve(name):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    plan = resolve_scorers(cfg)
    assert plan.needs_model == (name != "text")
    assert plan.needs_references == (name == "all")
    assert ("perplexity" in plan.names) == (name != "text")


def test_higher_is_better():
    assert higher_is_better("diversity") is True
    assert higher_is_better("rep_2") is False
    assert higher_is_better("reference_diversity") is True
    assert higher_is_better("mauve_ci_low") is True
    assert higher_is_better("diversity_std") is None
    assert higher_is_better("perplexity") is None
    assert higher_is_better("no_such_metric") is None


def test_missing_references_and_model_are_one_line_errors():
    records = [{"prompt_id": 0, "prompt": "p", "text": "a b c", "reference": None}]
    for names, match in ((["reference_rep"], "need references"), (["perplexity"], "need a model"),
                         (["gen_length"], None)):
        plan = resolve_scorers({"names": names})
        if match is None:
            plan.score(records, progress=False)  # needs no reference: fine
            continue
        with pytest.raises(ValueError, match=match) as err:
            plan.score(records, progress=False)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="need prompts"):
        resolve_scorers({"names": ["coherence"]}).score([{"text": "x"}], model=object(), tokenizer=object())


def test_bad_records():
    plan = resolve_scorers({"names": ["gen_length"]})
    for records, match in (([], "no generation records"), ([{"txt": "a"}], "record 0 has no string 'text'"),
                           ([{"prompt_id": 1, "text": "a"}, {"prompt_id": 1, "text": "b"}], "share prompt_id 1")):
        with pytest.raises(ValueError, match=match):
            plan.score(records, progress=False)


def runs_records(n_prompts=60, n_runs=3, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    return [{"prompt_id": f"p{p}", "sample_index": s, "prompt": "x",
             "text": " ".join(rng.choice(words, size=rng.integers(5, 40)))}
            for s in range(n_runs) for p in range(n_prompts)]


def test_runs_are_scored_separately_and_averaged():
    records = runs_records()
    plan = resolve_scorers({"names": ["rep", "gen_length", "distinct"], "bootstrap": {"samples": 0}})
    per_run = [plan.score([r for r in records if r["sample_index"] == s], progress=False) for s in range(3)]
    m = plan.score(records, progress=False)
    for metric in ("diversity", "gen_length", "distinct_2"):
        values = [r[metric] for r in per_run]
        assert m[metric] == pytest.approx(np.mean(values))
        assert m[f"{metric}_std"] == pytest.approx(np.std(values))
    assert not any(k.endswith("_ci_low") for k in m)


def test_bootstrap_is_seeded_and_contains_the_estimate():
    records = runs_records()
    plan = resolve_scorers({"names": ["rep", "gen_length", "rep_w", "distinct"], "bootstrap": {"samples": 300}})
    a = plan.score(records, seed=0, progress=False)
    assert a == plan.score(records, seed=0, progress=False)
    b = plan.score(records, seed=1, progress=False)
    assert a["gen_length_ci_low"] != b["gen_length_ci_low"] and a["gen_length"] == b["gen_length"]
    for metric in ("diversity", "rep_2", "gen_length", "rep_w"):
        assert a[f"{metric}_ci_low"] < a[metric] < a[f"{metric}_ci_high"]
    assert "distinct_2_ci_low" not in a  # corpus-level: no interval over prompts
    fixed = resolve_scorers({"names": ["gen_length"], "bootstrap": {"samples": 300, "seed": 7}})
    assert fixed.score(records, seed=0, progress=False) == fixed.score(records, seed=1, progress=False)


def test_bootstrap_interval_narrows_with_confidence():
    records = runs_records(n_runs=1)
    wide = resolve_scorers({"names": ["gen_length"], "bootstrap": {"samples": 500, "confidence": 0.99}})
    narrow = resolve_scorers({"names": ["gen_length"], "bootstrap": {"samples": 500, "confidence": 0.5}})
    w, n = wide.score(records, progress=False), narrow.score(records, progress=False)
    assert w["gen_length_ci_low"] < n["gen_length_ci_low"] < n["gen_length_ci_high"] < w["gen_length_ci_high"]


def test_load_generations_formats(tmp_path):
    rows = [{"prompt_id": "a", "prompt": "P", "prompt_token_ids": [1], "sample_index": 1, "text": "t1",
             "token_ids": [2], "num_tokens": 1, "finish_reason": "length", "reference": "R"},
            {"prompt_id": "a", "prompt": "P", "sample_index": 0, "text": "t0", "reference": "R"}]
    jsonl = tmp_path / "generations.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = load_generations(jsonl)
    assert records[0].to_json() == {**rows[0], "category": None} and records[1].token_ids is None
    assert records[1].sample_index == 0

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"output": "x y", "context": "c", "gold": "g", "seed": 2}]))
    records = load_generations(plain, text_field="output", prompt_field="context", reference_field="gold",
                               sample_field="seed")
    assert records[0].text == "x y" and records[0].prompt == "c" and records[0].reference == "g"
    assert records[0].sample_index == 2 and records[0].prompt_id == 0

    released = tmp_path / "released.json"
    released.write_text(json.dumps([{"prefix_text": "p", "reference_text": "r", "generated_result": {"0": "a", "1": "b"}}]))
    records = load_generations(released)
    assert [(r.prompt, r.reference, r.sample_index, r.text) for r in records] == [
        ("p", "r", 0, "a"), ("p", "r", 1, "b")]


def test_load_generations_errors(tmp_path):
    cases = {"missing.json": None, "empty.json": "", "broken.jsonl": '{"text": "a"}\n{"text": \n',
             "scalar.json": "3", "notext.json": json.dumps([{"output": "a"}])}
    matches = {"missing.json": "does not exist", "empty.json": "is empty", "broken.jsonl": r"broken.jsonl:2 is not JSON",
               "scalar.json": "holds a JSON int", "notext.json": "has no text field 'text'"}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(ValueError, match=matches[name]) as err:
            load_generations(path)
        assert "\n" not in str(err.value)


def test_score_file_checks_the_config_first(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"prompt_id": 0, "output": "a b c d e"}) + "\n")
    with pytest.raises(ValueError, match="unknown scorer"):
        score_file(tmp_path / "absent.jsonl", {"names": ["nope"]})
    m = score_file(path, {"names": ["gen_length"], "bootstrap": {"samples": 0}}, text_field="output", progress=False)
    assert m == {"gen_length": 5.0}


@pytest.mark.parametrize("group", ["default", "text", "all"])
def test_composed_hydra_config_resolves(group):
    """The real root config composed with Hydra: the scorers node (a DictConfig) resolves as it is,
    and command-line overrides reach the options."""
    hydra = pytest.importorskip("hydra")
    from decodebench.config import register_configs

    register_configs()
    with hydra.initialize_config_dir(config_dir=str(CONF.parent), version_base=None):
        cfg = hydra.compose(config_name="config", overrides=[
            f"scorers={group}", "scorers.bootstrap.samples=10", "+scorers.self_bleu.max_hypotheses=5"])
    plan = resolve_scorers(cfg.scorers)
    assert plan.bootstrap["samples"] == 10 and plan.describe()["self_bleu"] == {"max_hypotheses": 5}
