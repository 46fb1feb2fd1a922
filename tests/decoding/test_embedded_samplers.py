"""On the embedded model: a JSON-schema run gives only valid outputs; the watermark scorer flags a watermarked
run and not an unwatermarked one; CFG's combination equals transformers' processor; the new samplers run.

The loop here is the interface the engine drives: `chain(logits, DecodeState(...))`, `sample`, `chain.update`.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from transformers.generation import logits_process as hf

from decodebench.decoding import DecodeState, LogitsChain, SamplingParams, cfg_combine, row_keys, sample
from decodebench.scorers.constraints import constraint_fn, watermark_fn
from decodebench.scorers.inputs import Inputs

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
PROMPTS = ["Describe a person as JSON:", "The user record:", "Output JSON for a cat named Tom.", "Data:"]


@torch.no_grad()
def generate(model, tok, prompts, rows, max_new, seed=0):
    """Left-padded batch, full forward per step (no cache: the test is about the chain, not speed); the
    lm_head runs on the last position only."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    width = ids.shape[1]
    chain = LogitsChain.from_rows(rows, vocab_size=model.config.vocab_size, eos_token_id=tok.eos_token_id,
                                  device="cpu", tokenizer=tok)
    keys = row_keys(seed, [str(i) for i in range(len(prompts))], [0] * len(prompts))
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = [[] for _ in prompts]
    for step in range(max_new):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1].float()
        x = chain(logits, DecodeState(ids, mask, width, step, keys=keys))
        t = sample(x, keys, step, chain.sample_mode)
        chain.update(t)
        for i in range(len(prompts)):
            if not done[i]:
                if int(t[i]) == tok.eos_token_id:
                    done[i] = True
                else:
                    out[i].append(int(t[i]))
        if bool(done.all()):
            break
        ids, mask = torch.cat([ids, t[:, None]], 1), torch.cat([mask, torch.ones_like(t[:, None])], 1)
    chain.raise_if_nan()
    return out, bool(done.all())


def test_json_schema_run_gives_only_valid_outputs(embedded):
    model, tok = embedded
    g = {"json_schema": SCHEMA}
    rows = [SamplingParams(grammar=g), SamplingParams(do_sample=True, temperature=0.8, grammar=g),
            SamplingParams(do_sample=True, top_p=0.9, grammar=g), SamplingParams(do_sample=True, min_p=0.05, grammar=g)]
    out, finished = generate(model, tok, PROMPTS, rows, max_new=64)
    texts = [tok.decode(o) for o in out]
    assert finished, texts
    for t in texts:
        jsonschema.validate(json.loads(t), SCHEMA)  # raises on any invalid output
    rate = constraint_fn(Inputs(texts, [None] * 4, [None] * 4, [None] * 4, [None] * 4), json.dumps(SCHEMA), None)
    assert rate["constraint_valid_rate"].tolist() == [1.0] * 4
    free, _ = generate(model, tok, PROMPTS, [SamplingParams(do_sample=True)] * 4, max_new=24)  # without: not JSON
    assert constraint_fn(Inputs([tok.decode(o) for o in free], *[[None] * 4] * 4), json.dumps(SCHEMA),
                         None)["constraint_valid_rate"].mean() < 1


def test_watermark_scorer_detects_watermarked_runs_only(embedded):
    model, tok = embedded
    prompts = ["Once upon a time", "The history of the city", "In the morning, she", "Scientists have found"]
    marked = [SamplingParams(do_sample=True, watermark=True, watermark_delta=4.0)] * 4
    plain = [SamplingParams(do_sample=True)] * 4
    scores = {}
    for name, rows in (("marked", marked), ("plain", plain)):
        out, _ = generate(model, tok, prompts, rows, max_new=40, seed=1)
        inputs = Inputs([tok.decode(o) for o in out], [None] * 4, [None] * 4, out, [None] * 4, model=model)
        scores[name] = watermark_fn(inputs, 0.25, 15485863, "lefthash", 1, 0, 4.0, False)
    assert scores["marked"]["watermark_detected_rate"].tolist() == [1.0] * 4, scores["marked"]["watermark_z"]
    assert scores["plain"]["watermark_detected_rate"].tolist() == [0.0] * 4, scores["plain"]["watermark_z"]
    assert np.all(scores["marked"]["watermark_p_value"] < 1e-4)


@torch.no_grad()
def test_cfg_batched_forward_equals_hf_unbatched_processor(embedded):
    """Positive and negative rows in one left-padded forward of 2B rows, combined by `cfg_combine`, give
    what transformers' processor gives with its own second, unbatched forward."""
    model, tok = embedded
    prompt, negative = "Write a happy story about a dog.", "sad"
    both = tok([prompt, negative], return_tensors="pt", padding=True)
    pos = (both["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model(**both, position_ids=pos).logits[:, -1].float()
    neg = tok([negative], return_tensors="pt")
    cond = model(**tok([prompt], return_tensors="pt")).logits[:, -1].float()
    for scale in (1.5, 3.0):
        ref = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model, neg["input_ids"], neg["attention_mask"])(
            tok([prompt], return_tensors="pt")["input_ids"], cond)
        ours = cfg_combine(logits[:1], logits[1:], scale)
        assert torch.allclose(ours, ref, atol=2e-4), (ours - ref).abs().max()
        assert ours.argmax() == ref.argmax()


@pytest.mark.parametrize("params", [
    dict(top_n_sigma=1.0), dict(xtc_probability=0.5, xtc_threshold=0.1), dict(dry_multiplier=0.8),
    dict(mirostat=2, mirostat_tau=3.0), dict(mirostat=1), dict(tfs_z=0.9), dict(dynatemp_range=0.5),
    dict(smoothing_factor=0.3), dict(top_h=0.4), dict(order="llamacpp", top_k=40, top_p=0.9, min_p=0.05,
                                                       dry_multiplier=0.8, xtc_probability=0.5, temperature=0.8)])
def test_new_samplers_run_and_rows_do_not_depend_on_batch_mates(embedded, params):
    model, tok = embedded
    rows = [SamplingParams(do_sample=True, **params), SamplingParams(do_sample=True, order=params.get("order", "hf"))]
    together, _ = generate(model, tok, ["The weather today", "A list of fruits:"], rows, max_new=12, seed=3)
    alone, _ = generate(model, tok, ["The weather today"], rows[:1], max_new=12, seed=3)
    assert together[0] == alone[0] and len(alone[0]) > 0
