"""Watermarks against transformers' processor and detector; mirostat's per-row state across steps; XTC's coin
from the row's key; state carried by `LogitsChain.select`. fp32, bf16 and fp16 where logits are involved."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from transformers.generation import WatermarkDetector
from transformers.generation import logits_process as hf

from decodebench.decoding import DecodeState, LogitsChain, SamplingParams, process_logits, row_keys, sample
from decodebench.decoding.transforms.watermark import WatermarkKey, detect

from .helpers import DTYPES, make_logits

V = 97


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scheme,width", [("lefthash", 1), ("selfhash", 1), ("selfhash", 3), ("lefthash", 2)])
def test_watermark_equals_hf(dtype, scheme, width):
    x = make_logits(4, V, dtype, seed=1)
    ids = torch.randint(0, V, (4, 6), generator=torch.Generator().manual_seed(2))
    kw = dict(watermark_gamma=0.3, watermark_delta=1.7, watermark_seeding_scheme=scheme, watermark_context_width=width)
    out = process_logits(x, ids, watermark=True, **kw)
    ref = hf.WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=0.3, bias=1.7, seeding_scheme=scheme,
                                      context_width=width)(ids, x)
    assert torch.equal(out, ref)


def test_watermark_rows_off_are_unchanged_and_rows_are_independent():
    x = make_logits(3, V, torch.float32, seed=3)
    ids = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(4))
    rows = [SamplingParams(watermark=True), SamplingParams(), SamplingParams(watermark=True, watermark_delta=4.0)]
    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")
    out = chain(x, DecodeState(ids, torch.ones_like(ids), 5, 0))
    assert torch.equal(out[1], x[1])
    for i in (0, 2):
        alone = LogitsChain.from_rows([rows[i]], vocab_size=V, eos_token_id=None, device="cpu")
        assert torch.equal(out[i : i + 1], alone(x[i : i + 1], DecodeState(ids[i : i + 1], torch.ones_like(ids[:1]), 5, 0)))


@pytest.mark.parametrize("scheme,width", [("lefthash", 1), ("selfhash", 2)])
def test_detector_equals_hf(scheme, width):
    cfg = {"greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": 15485863, "seeding_scheme": scheme,
           "context_width": width}
    model_config = types.SimpleNamespace(bos_token_id=V + 5, is_encoder_decoder=False, vocab_size=V)
    ref = WatermarkDetector(model_config, "cpu", cfg)
    key = WatermarkKey(V, 0.25, 15485863, scheme, width)
    g = torch.Generator().manual_seed(5)
    texts = torch.randint(0, V, (3, 30), generator=g)
    out = ref(texts, return_dict=True)
    for i in range(3):
        got = detect(key, texts[i].tolist())
        assert got["num_green_tokens"] == out.num_green_tokens[i] and got["num_tokens_scored"] == out.num_tokens_scored[i]
        assert math.isclose(got["z_score"], out.z_score[i], rel_tol=1e-12)
        assert math.isclose(got["p_value"], float(out.p_value[i]), rel_tol=1e-9)


# ---------------------------------------------------------------------------------------------- mirostat
def ref_mirostat(logits_steps, tokens, version, tau, eta, vocab_size, m=100):
    """llama.cpp's mirostat (v1) / mirostat_v2 on one row, step by step, with the tokens given: the kept
    sets and mu after each step (float32 as llama.cpp)."""
    mu, kept = np.float32(2 * tau), []
    for x, tok in zip(logits_steps, tokens):
        ids = list(np.argsort(-x, kind="stable"))
        e = np.exp(x[ids].astype(np.float64) - x[ids[0]])
        p = (e / e.sum()).astype(np.float32)
        if version == 2:
            n = next((i for i in range(len(p)) if -math.log2(p[i]) > mu), len(p))
            n = max(n, 1)
        else:
            num = sum(math.log((i + 2) / (i + 1)) * math.log(p[i] / p[i + 1]) for i in range(min(m - 1, len(p) - 1)))
            den = sum(math.log((i + 2) / (i + 1)) ** 2 for i in range(min(m - 1, len(p) - 1)))
            s = num / den
            k = ((s - 1) * 2.0**mu / (1 - vocab_size ** (-(s - 1)))) ** (1 / s)
            n = max(int(k), 1)
        keep = ids[:n]
        kept.append(set(keep))
        q = p[:n].astype(np.float64) / p[:n].sum()
        surprise = -math.log2(q[keep.index(tok)])
        mu = np.float32(mu - eta * (surprise - tau))
    return kept, float(mu)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mirostat_state_across_steps_per_row(dtype):
    rows = [SamplingParams(do_sample=True, mirostat=2, mirostat_tau=3.0, mirostat_eta=0.1), SamplingParams(do_sample=True),
            SamplingParams(do_sample=True, mirostat=1, mirostat_tau=5.0, mirostat_eta=0.2),
            SamplingParams(do_sample=True, mirostat=2, mirostat_tau=1.5, mirostat_eta=0.5)]
    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")
    keys = row_keys(0, ["a", "b", "c", "d"], [0] * 4)
    steps, toks, kept = [], [], []
    ids = torch.zeros(4, 1, dtype=torch.long)
    for step in range(6):
        x = make_logits(4, V, dtype, seed=10 + step) * 0.6
        out = chain(x, DecodeState(ids, torch.ones_like(ids), 1, step, keys=keys))
        tok = sample(out, keys, step, True)
        chain.update(tok)
        ids = torch.cat([ids, tok[:, None]], 1)
        steps.append(x.float().numpy())
        toks.append(tok.tolist())
        kept.append([set(np.flatnonzero(np.isfinite(r))) for r in out.float().numpy()])
    assert all(len(k[1]) == V for k in kept)  # the row without mirostat is untouched
    for i in (0, 2, 3):
        r = rows[i]
        want_kept, want_mu = ref_mirostat([s[i] for s in steps], [t[i] for t in toks], r.mirostat, r.mirostat_tau,
                                          r.mirostat_eta, V)
        assert [k[i] for k in kept] == want_kept
        assert math.isclose(float(chain._stateful["mirostat"].mu[i]), want_mu, rel_tol=1e-4)
    # select carries each row's mu; a rebuilt chain takes the kept rows' mu and starts joined rows afresh
    mu = chain._stateful["mirostat"].mu
    sub = chain.select([3, 0])
    assert torch.equal(sub._stateful["mirostat"].mu, mu[[3, 0]])
    rebuilt = LogitsChain.from_rows([rows[2], rows[0], rows[3]], vocab_size=V, eos_token_id=None, device="cpu")
    rebuilt.carry_state(chain, [2, None, 3])
    assert rebuilt._stateful["mirostat"].mu.tolist() == [mu[2].item(), 2 * rows[0].mirostat_tau, mu[3].item()]


def test_xtc_coin_depends_only_on_the_rows_key_and_step():
    x = make_logits(4, 50, torch.float32, seed=20) * 0.3
    keys = row_keys(1, ["p0", "p1", "p2", "p3"], [0, 1, 0, 0])
    kw = dict(xtc_probability=0.5, xtc_threshold=0.02)
    fired = []
    for step in range(8):
        ids = torch.zeros(4, 1, dtype=torch.long)
        rows = [SamplingParams(do_sample=True, **kw)] * 4
        chain = LogitsChain.from_rows(rows, vocab_size=50, eos_token_id=None, device="cpu")
        out = chain(x, DecodeState(ids, torch.ones_like(ids), 1, step, keys=keys))
        for j in range(4):  # the same row alone, and in another position, gives the same
            alone = LogitsChain.from_rows(rows[:1], vocab_size=50, eos_token_id=None, device="cpu")
            assert torch.equal(out[j], alone(x[j : j + 1], DecodeState(ids[:1], torch.ones_like(ids[:1]), 1, step,
                                                                        keys=keys[j : j + 1]))[0])
        fired += [bool(out[j].isinf().any()) for j in range(4)]
    assert 0.2 < np.mean(fired) < 0.8  # the coin lands both ways at probability 0.5
    with pytest.raises(ValueError, match="xtc_probability needs the rows' noise keys"):
        chain(x, DecodeState(ids, torch.ones_like(ids), 1, 0))
