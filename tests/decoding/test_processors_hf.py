"""Each filtering transform against Hugging Face's processor of the same name: same kept set, same bits."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from decodebench.decoding.transforms.filters import epsilon, eta, min_p, temperature, top_k, top_p, typical
from decodebench.decoding.transforms.filters import _top_p_cut, top_k_top_p

from .helpers import DTYPES, logit_cases, make_logits

CASES = logit_cases()
IDS = torch.zeros(6, 1, dtype=torch.long)  # warpers ignore input_ids


def _same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == theirs.dtype
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), "kept sets differ"
    assert torch.equal(ours, theirs), "kept values differ"


def _scale(x: torch.Tensor) -> torch.Tensor:
    return x  # warpers see raw random logits; the grid in CASES already covers ties and -inf


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_temperature(label, x):
    for t in (0.3, 0.7, 1.0, 1.3, 1.7, 2.0):
        _same(temperature(x, t), hf.TemperatureLogitsWarper(t)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_top_k(label, x):
    v = x.shape[-1]
    for k in (1, 2, 5, 50, v - 1, v, v + 10):
        for mtk in (1, 3):
            _same(top_k(x, k, mtk), hf.TopKLogitsWarper(k, min_tokens_to_keep=mtk)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_top_p(label, x):
    for p in (0.05, 0.3, 0.5, 0.9, 0.95, 0.999, 1.0):
        for mtk in (1, 3):
            _same(top_p(x, p, mtk), hf.TopPLogitsWarper(p, min_tokens_to_keep=mtk)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_top_p_after_top_k_without_sort(label, x):
    """The sort-free paths (top_k ran first; top_k fused with top_p) give HF's bits, ties at the cut
    included (those rows fall back to the sort)."""
    for k in (1, 3, 40):
        for mtk in (1, 2):
            xk = hf.TopKLogitsWarper(k, min_tokens_to_keep=mtk)(IDS, x)  # generate() gives both the same
            for p in (0.1, 0.5, 0.95, 1.0):
                ref = hf.TopPLogitsWarper(p, min_tokens_to_keep=mtk)(IDS, xk)
                for support in (k + 16, 2):  # 2 < k: rows must fall back to the sort
                    _same(top_p(xk, p, mtk, support=support), ref)
                    _same(top_k_top_p(x, k, p, mtk, support=support), ref)
    if "noties" in label and x.dtype in (torch.float32, torch.float64):  # no ties (bf16/fp16 round into ties): shortcut on every row
        thr = torch.full((x.shape[0], 1), 0.5, dtype=x.dtype)
        asc = torch.topk(xk, 41 + 16).values.flip(-1)
        assert _top_p_cut(asc, thr, torch.ones(x.shape[0], 1, dtype=torch.long), x.shape[-1])[1].all()


def test_top_p_block_detects_tie_at_the_cut():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0] + [float("-inf")] * 20])
    thr = torch.tensor([[0.5]])  # half the mass: the cut falls between tied tokens
    _, ok = _top_p_cut(torch.topk(x, 8).values.flip(-1), thr, torch.tensor([[1]]), x.shape[-1])
    assert not ok.any()
    _same(top_p(x, 0.5, support=7), hf.TopPLogitsWarper(0.5)(IDS[:1], x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_min_p(label, x):
    for m in (0.0, 0.05, 0.2, 0.3, 0.7, 1.0):  # 0.3: rounding it to bf16 (0.30078125) drops tokens
        for mtk in (1, 3):
            _same(min_p(x, m, mtk), hf.MinPLogitsWarper(m, min_tokens_to_keep=mtk)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_typical(label, x):
    for mass in (0.05, 0.2, 0.5, 0.9, 0.99):
        for mtk in (1, 3):
            _same(typical(x, mass, mtk), hf.TypicalLogitsWarper(mass, min_tokens_to_keep=mtk)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_epsilon(label, x):
    for e in (1e-4, 3e-3, 0.05, 0.3, 0.9):
        for mtk in (1, 3):
            _same(epsilon(x, e, mtk), hf.EpsilonLogitsWarper(e, min_tokens_to_keep=mtk)(IDS, x))


@pytest.mark.parametrize("label,x", CASES, ids=[c[0] for c in CASES])
def test_eta(label, x):
    for e in (1e-4, 3e-3, 0.05, 0.3, 0.9):
        for mtk in (1, 3):
            _same(eta(x, e, mtk), hf.EtaLogitsWarper(e, min_tokens_to_keep=mtk)(IDS, x))


# ----------------------------------------------------------------- per-row settings, half the rows off
NEUTRAL = {"temperature": 1.0, "top_k": 0, "top_p": float("inf"), "min_p": 0.0, "typical": float("inf"),
           "epsilon": 0.0, "eta": 0.0}
PER_ROW = [
    ("temperature", temperature, [0.3, 0.7, 1.3, 2.0], hf.TemperatureLogitsWarper),
    ("top_k", top_k, [1, 4, 30, 500], hf.TopKLogitsWarper),
    ("top_p", top_p, [0.2, 0.6, 0.9, 1.0], hf.TopPLogitsWarper),
    ("min_p", min_p, [0.02, 0.1, 0.3, 1.0], hf.MinPLogitsWarper),
    ("typical", typical, [0.1, 0.4, 0.8, 0.95], hf.TypicalLogitsWarper),
    ("epsilon", epsilon, [1e-3, 1e-2, 0.05, 0.2], hf.EpsilonLogitsWarper),
    ("eta", eta, [1e-3, 1e-2, 0.05, 0.2], hf.EtaLogitsWarper),
]


@pytest.mark.parametrize("name,fn,values,proc", PER_ROW, ids=[p[0] for p in PER_ROW])
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_row_matches_each_row_alone(name, fn, values, proc, dtype):
    x = make_logits(8, 300, dtype, seed=11, ties=True, neg_inf=0.2)
    vals = [values[i // 2] if i % 2 == 0 else NEUTRAL[name] for i in range(8)]  # odd rows disabled
    is_int = name == "top_k"
    col = torch.tensor(vals, dtype=torch.long if is_int else torch.float64)
    out = fn(x, col)
    for i, val in enumerate(vals):
        row = x[i : i + 1]
        if i % 2:
            assert torch.equal(out[i], x[i]), f"disabled row {i} changed"
            continue
        ref = proc(val)(IDS[:1], row) if name == "temperature" else proc(val, min_tokens_to_keep=1)(IDS[:1], row)
        _same(out[i : i + 1], ref)
        _same(out[i : i + 1], fn(row, val))


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_row_min_tokens_to_keep(dtype):
    x = make_logits(4, 200, dtype, seed=3, ties=True)
    mtk = torch.tensor([1, 5, 2, 9])
    for fn, proc, val in ((top_p, hf.TopPLogitsWarper, 0.1), (min_p, hf.MinPLogitsWarper, 0.9),
                          (typical, hf.TypicalLogitsWarper, 0.1), (epsilon, hf.EpsilonLogitsWarper, 0.2),
                          (eta, hf.EtaLogitsWarper, 0.2), (top_k, hf.TopKLogitsWarper, 1)):
        out = fn(x, val, mtk)
        for i in range(4):
            # min_p with several tokens to keep picks them by topk: compare where it is well defined
            _same(out[i : i + 1], proc(val, min_tokens_to_keep=int(mtk[i]))(IDS[:1], x[i : i + 1]))


def test_temperature_zero_keeps_only_the_argmax():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.5, 0.1, 0.2, 0.3]])
    out = temperature(x, torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert out[0].tolist() == [float("-inf"), 3.0, float("-inf"), float("-inf")]  # first argmax on ties
    assert torch.equal(out[1], x[1] / 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_top_k_top_p_per_row(dtype):
    x = make_logits(8, 300, dtype, seed=21, ties=True, neg_inf=0.2)
    ks = [1, 0, 5, 30, 0, 12, 400, 3]  # 0: off; 400 > V: off
    ps = [0.5, 0.9, float("inf"), 0.8, float("inf"), 0.3, 0.95, 1.0]  # inf: off
    mtk = [1, 2, 1, 3, 1, 1, 2, 4]
    out = top_k_top_p(x, torch.tensor(ks), torch.tensor(ps, dtype=torch.float64), torch.tensor(mtk), support=46)
    for i in range(8):
        ref = x[i : i + 1]
        if 0 < ks[i]:
            ref = hf.TopKLogitsWarper(ks[i], min_tokens_to_keep=mtk[i])(IDS[:1], ref)
        if ps[i] <= 1.0:
            ref = hf.TopPLogitsWarper(ps[i], min_tokens_to_keep=mtk[i])(IDS[:1], ref)
        _same(out[i : i + 1], ref)
