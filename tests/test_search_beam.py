"""Beam search against transformers' `generate(num_beams=...)` (the slow reference), token for token and score
for score, over early_stopping, length_penalty, num_return_sequences, EOS, transforms and stop rules."""

from __future__ import annotations

import functools

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.engine.stopping import register_stopping
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs

TEXTS = ["a", "hello world, this is longer", "xyz", "0123456789" * 2, "q", "The cat"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run small matrices: a second OpenMP thread buys nothing, and on a busy 2-core machine its
    spin-waits made them 8x slower. Restored afterwards. (Imported by the other test_search_* modules.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def peaky_tiny():
    """The tiny Llama with a peaked output layer (max prob ~0.7) and EOS made likely (~20% at a step).

    The plain random tiny model is nearly uniform, where ties decide everything; this one exercises
    real choices, EOS handling and finished hypotheses."""
    from decodebench.models import tiny_model

    model, tok = tiny_model(seed=1)
    model.eval()
    with torch.no_grad():
        b = tok(TEXTS, return_tensors="pt", padding=True)
        m = model.model(**b).last_hidden_state[:, -1].mean(0)
        model.lm_head.weight.mul_(30.0)
        model.lm_head.weight[tok.eos_token_id] += 10.0 * m / (m @ m)
    return model, tok


def by_length(tok, texts):
    """Texts ordered as the engine orders rows (by prompt length), so both sides batch rows alike and
    even the last bits of the scores agree (CPU matmul results depend on a row's place in the batch)."""
    return sorted(texts, key=lambda x: len(tok(x)["input_ids"]))


def hf_beam(model, tok, texts, n_new, **kw):
    b = tok(texts, return_tensors="pt", padding=True)
    out = model.generate(**b, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id,
                         return_dict_in_generate=True, output_scores=True, **kw)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    gen = out.sequences[:, b["input_ids"].shape[1]:].tolist()
    if getattr(out, "beam_indices", None) is not None:  # a hypothesis's true length (HF fills after it with
        lens = (out.beam_indices >= 0).sum(1).tolist()  # `pad_token_id or eos`: EOS when pad id is 0)
        return [row[:n] for row, n in zip(gen, lens)], out.sequences_scores.tolist()
    toks = [row[: next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in gen]
    scores = getattr(out, "sequences_scores", None)  # num_beams=1 is greedy there: no scores
    return toks, None if scores is None else scores.tolist()


def run(model, tok, texts, d, batch_size=64, **kw):
    spec = build_strategy({"name": "t", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params)
            for i, x in enumerate(texts) for s in range(spec.num_return_sequences)]
    return generate(model, tok, reqs, spec, batch_size=batch_size, **kw)


def beam(nb=4, n=1, lp=1.0, es=False, n_new=12, **extra):
    return dict(method="beam", num_beams=nb, num_return_sequences=n, length_penalty=lp, early_stopping=es,
                max_new_tokens=n_new, **extra)


@pytest.mark.parametrize("nb,n,lp,es", [
    (4, 1, 1.0, False), (4, 2, 1.0, True), (3, 3, 0.5, "never"), (4, 4, -1.0, False),
    (2, 1, 2.0, "never"), (5, 3, 0.0, True), (1, 1, 1.0, False), (4, 2, 1.5, False),
])
def test_beam_equals_generate(nb, n, lp, es):
    model, tok = peaky_tiny()
    texts = by_length(tok, TEXTS)
    ref, ref_scores = hf_beam(model, tok, texts, 12, num_beams=nb, num_return_sequences=n,
                              length_penalty=lp, early_stopping=es)
    outs, _ = run(model, tok, texts, beam(nb, n, lp, es))
    assert [o.token_ids for o in outs] == ref
    if ref_scores is not None:
        assert [o.score for o in outs] == ref_scores  # bit for bit
    assert [o.extra["beam_rank"] for o in outs] == list(range(n)) * len(texts)
    eos = tok.eos_token_id
    for o in outs:
        assert o.finish_reason == ("eos" if o.token_ids[-1] == eos else "length")
    if nb == 4 and n == 4:
        assert any(o.finish_reason == "eos" for o in outs) and any(o.finish_reason == "length" for o in outs)


@pytest.mark.parametrize("extra,hf_kw", [
    (dict(repetition_penalty=1.3), dict(repetition_penalty=1.3)),
    (dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=2)),
    (dict(min_new_tokens=5), dict(min_new_tokens=5)),
    (dict(bad_words_ids=[70, 71]), dict(bad_words_ids=[[70], [71]])),
    (dict(logit_bias={70: 3.0, 117: -2.0}), dict(sequence_bias={(70,): 3.0, (117,): -2.0})),
])
def test_beam_with_transforms_equals_generate(extra, hf_kw):
    model, tok = peaky_tiny()
    texts = by_length(tok, TEXTS)
    ref, ref_scores = hf_beam(model, tok, texts, 10, num_beams=3, num_return_sequences=2, **hf_kw)
    outs, _ = run(model, tok, texts, beam(3, 2, n_new=10, **extra))
    assert [o.token_ids for o in outs] == ref
    assert [o.score for o in outs] == ref_scores


def test_results_do_not_depend_on_batching():
    model, tok = peaky_tiny()
    texts = by_length(tok, TEXTS)
    full, _ = run(model, tok, texts, beam(4, 3))
    for bs in (1, 2, 5):  # 5 splits prompts' row groups across batches
        outs, _ = run(model, tok, texts, beam(4, 3), batch_size=bs)
        assert [o.token_ids for o in outs] == [o.token_ids for o in full]
        assert [o.score for o in outs] == pytest.approx([o.score for o in full], rel=1e-5)


def test_forward_accounting():
    model, tok = peaky_tiny()
    texts = by_length(tok, TEXTS)
    outs, stats = run(model, tok, texts, beam(4, 1, n_new=6, es="never"))
    width = max(len(tok(x)["input_ids"]) for x in texts)
    steps = stats.steps
    assert stats.forward_passes == 1 + (steps - 1)  # one prefill per batch, then one forward per step
    assert stats.tokens_processed == len(texts) * width + len(texts) * 4 * (steps - 1)


def test_stop_strings_equal_generate():
    model, tok = peaky_tiny()
    texts = by_length(tok, TEXTS)
    plain, _ = run(model, tok, texts, beam(3, 1))
    stop = tok.decode(plain[-1].token_ids[4:6])  # text the search meets on its way ("\x7f\x7f")
    assert stop
    ref, ref_scores = hf_beam(model, tok, texts, 12, num_beams=3, stop_strings=[stop], tokenizer=tok)
    outs, _ = run(model, tok, texts, beam(3, 1, stop=[stop]))
    assert [o.token_ids for o in outs] == ref
    assert [o.score for o in outs] == ref_scores
    reasons = [o.finish_reason for o in outs]
    assert "stop" in reasons
    for o in outs:
        if o.finish_reason == "stop":
            assert stop in tok.decode(o.token_ids) and stop not in tok.decode(o.token_ids[:-1])


@register_stopping("test_five_tokens")
def _five_tokens(tokenizer):
    return lambda tokens, lengths: lengths >= 5


def test_user_criterion_ends_hypotheses_and_names_the_reason():
    model, tok = peaky_tiny()
    outs, _ = run(model, tok, TEXTS, beam(3, 2, stopping=["test_five_tokens"]))
    for o in outs:
        assert len(o.token_ids) <= 5
        assert o.finish_reason == ("eos" if o.token_ids[-1] == tok.eos_token_id else "test_five_tokens")
    # the same criterion in the sampling loop
    outs, _ = run(model, tok, TEXTS, dict(method="sampling", do_sample=True, max_new_tokens=12,
                                          stopping=["test_five_tokens"]))
    assert {o.finish_reason for o in outs} <= {"eos", "test_five_tokens"}
    assert all(len(o.token_ids) <= 5 for o in outs)


def test_max_time_ends_every_hypothesis():
    model, tok = peaky_tiny()
    outs, _ = run(model, tok, TEXTS, beam(3, 2, max_time=1e-9))
    for o in outs:
        assert len(o.token_ids) == 1 and o.finish_reason in ("time", "eos")
    assert "time" in {o.finish_reason for o in outs}


def test_beam_equals_generate_on_embedded_model(embedded, cfg_of):
    """The issue's acceptance line: strategy=beam num_beams=4 length_penalty=1.0 early_stopping=false."""
    from decodebench.config import validate

    model, tok = embedded
    spec = validate(to_specs(cfg_of(["strategy=beam", "strategy.num_beams=4", "strategy.length_penalty=1.0",
                            "strategy.early_stopping=false", "strategy.max_new_tokens=10"])))
    texts = by_length(tok, ["In 1854, the city of London", "Photosynthesis is"])
    ref, ref_scores = hf_beam(model, tok, texts, 10, num_beams=4, length_penalty=1.0, early_stopping=False)
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    outs, stats = generate(model, tok, reqs, spec, batch_size=8)
    assert [o.token_ids for o in outs] == ref
    assert [o.score for o in outs] == ref_scores
    assert stats.forward_passes == stats.steps  # prefill + (steps - 1) decode forwards


@pytest.mark.parametrize("d", [
    dict(method="contrastive", top_k=3, penalty_alpha=0.5),
    dict(method="diverse_beam", num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2),
    dict(method="stochastic_beam", do_sample=True, num_beams=3, num_return_sequences=3),
])
def test_max_time_ends_every_search_method(d):
    model, tok = peaky_tiny()
    outs, _ = run(model, tok, TEXTS, dict(max_new_tokens=12, max_time=1e-9, **d))
    assert all(len(o.token_ids) == 1 and o.finish_reason in ("time", "eos") for o in outs)
    assert "time" in {o.finish_reason for o in outs}


@pytest.mark.parametrize("method", ["beam", "diverse_beam", "stochastic_beam"])
def test_beam_type_methods_refuse_telemetry(method):
    model, tok = peaky_tiny()
    with pytest.raises(ValueError, match="record .* not available"):
        groups = 2 if method == "diverse_beam" else 1
        run(model, tok, TEXTS[:1], dict(method=method, num_beams=2, num_beam_groups=groups, max_new_tokens=2),
            record=("entropy",))
