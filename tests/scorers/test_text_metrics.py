"""Text metrics against their reference implementations and hand-computed values."""

from __future__ import annotations

import importlib.util
import gzip
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from decodebench.scorers import load_generations, resolve_scorers
from decodebench.scorers.corpus import compression_ratio, zipf_coefficient
from decodebench.scorers.repetition import rep_r_value, rep_w_value, tail_loop
from decodebench.scorers.self_bleu import self_bleu


def score(names, texts, **options):
    records = [{"prompt_id": i, "text": t} for i, t in enumerate(texts)]
    cfg = {"names": names, "bootstrap": {"samples": 0}, **options}
    return resolve_scorers(cfg).score(records, progress=False)


def test_distinct_n_by_hand():
    m = score(["distinct"], ["a b a b", "a b c"])
    # unigrams: 7 total, {a, b, c}; bigrams: ab ba ab | ab bc -> 5 total, {ab, ba, bc}
    assert m["distinct_1"] == pytest.approx(3 / 7)
    assert m["distinct_2"] == pytest.approx(3 / 5)
    assert m["distinct_4"] == pytest.approx(1.0)  # one 4-gram in all


def test_seq_rep_4_is_a_mean_over_generations():
    m = score(["seq_rep"], ["a b c d a b c d", "x y z w v", "too short"])
    # text 1: 5 4-grams, 4 unique (abcd twice) -> 0.2; text 2: 2 of 2 unique -> 0; text 3: no 4-gram, left out
    assert m["seq_rep_4"] == pytest.approx(0.1)


def test_rep_w_and_rep_r_by_hand():
    tokens = "a b a b c".split()
    assert rep_w_value(tokens, 16) == pytest.approx(2 / 5)
    assert rep_w_value(tokens, 1) == pytest.approx(0.0)  # nothing repeats its direct predecessor
    assert rep_r_value(tokens) == pytest.approx(4 / 5)  # "a b" occurs twice: tokens 0-3 are repeated
    assert rep_r_value(["a"]) == 0.0 and math.isnan(rep_r_value([]))


def test_repetition_loop_follows_holtzman():
    assert tail_loop("x y z a b c a b c".split(), 90) == (3, 2)
    m = score(["repetition_loop"], ["x y z a b c a b c", "a a a", " ".join(["a"] * 60), "no loop here", ""])
    # loops: a 3-token phrase twice; "a" 60 times (> 50); not "a a a" (1-token phrase, only 3 times)
    assert m["repetition_loop_rate"] == pytest.approx(2 / 5)


def test_gen_length_counts_whitespace_tokens():
    assert score(["gen_length"], ["one two  three\n", "", "four"])["gen_length"] == pytest.approx(4 / 3)


def test_self_bleu_equals_nltk_on_a_small_set(webtext):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    records = load_generations(webtext / "topk.json")[:40]
    texts = [r.text.split() for r in records] + [[], ["a"], ["The", "The"], ["a", "b", "c"]]
    smooth = SmoothingFunction().method1
    expected = [sentence_bleu(texts[:i] + texts[i + 1:], texts[i], weights=(0.25,) * 4, smoothing_function=smooth)
                for i in range(len(texts))]
    assert [self_bleu(texts, [i]) for i in range(len(texts))] == expected  # exact, not approximate
    m = score(["self_bleu"], [" ".join(t) for t in texts])
    assert m["self_bleu_4"] == pytest.approx(float(np.mean(expected)), rel=1e-12)


def test_self_bleu_subset_is_seeded():
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{x}" for x in rng.integers(0, 12, size=rng.integers(5, 15))) for _ in range(30)]
    records = [{"prompt_id": i, "text": t} for i, t in enumerate(texts)]
    plan = resolve_scorers({"names": ["self_bleu"], "self_bleu": {"max_hypotheses": 5}, "bootstrap": {"samples": 0}})
    a, b = (plan.score(records, seed=1, progress=False) for _ in range(2))
    c = plan.score(records, seed=2, progress=False)
    assert a == b and a != c


def _diversity_package_compression():
    """The `diversity` package's compression.py, loaded on its own: its __init__ imports heavy extras
    (sentence-transformers, transformers < 5), so it is installed with --no-deps for this test."""
    spec = importlib.util.find_spec("diversity")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "compression.py"
    module_spec = importlib.util.spec_from_file_location("_diversity_compression", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.compression_ratio


def _documented_formula(texts):
    """The package's gzip branch as its source does it: files on disk, the text gzipped twice."""
    with tempfile.TemporaryDirectory() as tmp:
        original, packed = os.path.join(tmp, "original.txt"), os.path.join(tmp, "compressed.gz")
        with open(original, "w+", encoding="utf-8") as f:
            f.write(" ".join(texts))
        with gzip.GzipFile(packed, "w+") as f:
            f.write(gzip.compress(" ".join(texts).encode("utf-8")))
        return round(os.path.getsize(original) / os.path.getsize(packed), 3)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_compression_ratio_equals_the_diversity_package(webtext, n):
    texts = [r.text for r in load_generations(webtext / "beam.json")[:n]] + ["", "é ü"]
    assert compression_ratio(texts) == _documented_formula(texts)
    package = _diversity_package_compression()
    if package is None:
        pytest.skip("diversity package not installed (pip install --no-deps diversity==0.3.1); compared with its formula only")
    assert compression_ratio(texts) == package(texts, "gzip")


def test_zipf_equals_holtzman_linregress():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    seqs = [list(rng.zipf(1.3, size=200) % 4000) for _ in range(50)]
    counts = Counter(x for s in seqs for x in s)
    for top in (50, 5000):
        xs = np.arange(1, min(len(counts), top) + 1)
        ys = np.array(sorted(counts.values(), reverse=True)[:top])
        expected = -stats.linregress(np.log(xs), np.log(ys)).slope
        assert zipf_coefficient(seqs, top) == pytest.approx(expected, rel=1e-9)


def test_empty_generations_are_scored_not_crashed():
    names = ["rep", "gen_length", "distinct", "seq_rep", "rep_w", "rep_r", "repetition_loop", "self_bleu",
             "compression_ratio", "zipf"]
    some = score(names, ["", "a b c d e f", "   ", "a b c d e f g"])
    assert some["gen_length"] == pytest.approx(13 / 4)
    assert all(isinstance(v, float) for v in some.values())
    none = score(names, ["", ""])
    assert none["gen_length"] == 0.0 and none["repetition_loop_rate"] == 0.0
    assert math.isnan(none["diversity"]) and math.isnan(none["distinct_1"])  # no n-gram: undefined, not 0


def test_unit_token_uses_the_engine_token_ids():
    records = [{"prompt_id": 0, "text": "ab ab", "token_ids": [5, 6, 5, 6, 5, 6]}]
    plan = resolve_scorers({"names": ["rep_r"], "rep_r": {"unit": "token"}, "bootstrap": {"samples": 0}})
    assert plan.needs >= {"token_ids"}
    assert plan.score(records, progress=False)["rep_r"] == 1.0
    with pytest.raises(ValueError, match="token_ids"):
        plan.score([{"prompt_id": 0, "text": "ab ab"}], progress=False)


def test_all_text_metrics_on_the_released_nucleus_runs_are_fast(webtext):
    import time

    records = load_generations(webtext / "nucleus.json")
    plan = resolve_scorers({"names": ["rep", "gen_length", "distinct", "seq_rep", "rep_w", "rep_r",
                                      "repetition_loop", "self_bleu", "compression_ratio", "zipf"]})
    start = time.perf_counter()
    m = plan.score(records, progress=False)
    assert time.perf_counter() - start < 60
    assert 0 < m["self_bleu_4"] < 1 and 0 <= m["repetition_loop_rate"] < 0.05 and m["compression_ratio"] > 1
