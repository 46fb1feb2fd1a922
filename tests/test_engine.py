"""The engine against transformers' generate (the slow reference), EOS/length/stop handling, telemetry."""

from __future__ import annotations

import copy

import pytest
import torch

from decodebench.decoding.engine import Request, generate, pack_left, positions
from decodebench.decoding.params import SamplingParams
from decodebench.decoding.search.spec import build_strategy

PROMPTS = [
    "The old lighthouse keeper climbed the stairs one last time and",
    "In 1854, the city of London",
    "Photosynthesis is",
    "Write a haiku about rain.",
    "def fibonacci(n):\n    ",
]


def hf_greedy(model, tok, texts, n):
    batch = tok(texts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    gen = out[:, batch["input_ids"].shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    res = []
    for row in gen:
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        res.append(row[:cut])
    return res


def ours(model, tok, texts, spec, batch_size=8, **kw):
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(t)["input_ids"], params=spec.params, seed=kw.pop("seed", 0))
            for i, t in enumerate(texts)]
    outs, stats = generate(model, tok, reqs, spec, batch_size=batch_size, **kw)
    return outs, stats


def test_pack_left_and_positions():
    ids, mask = pack_left([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [1, 1, 0]]


def test_greedy_equals_generate_on_embedded_model(embedded):
    model, tok = embedded
    spec = build_strategy({"name": "greedy", "do_sample": False, "max_new_tokens": 24})
    outs, stats = ours(model, tok, PROMPTS, spec)
    ref = hf_greedy(model, tok, PROMPTS, 24)
    assert [o.token_ids for o in outs] == ref
    assert stats.generated_tokens == sum(len(r) for r in ref)
    assert stats.forward_passes >= 24 - 1


def eos_happy_copy(tiny, bias: float):
    """A copy of the tiny model with the EOS row of its (tied) embedding and output matrix shifted, so
    that some rows end early (the session's tiny model stays as it is)."""
    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] += bias
    return model, tok


def test_greedy_equals_generate_with_eos_and_batches(tiny):
    model, tok = eos_happy_copy(tiny, -0.1)
    texts = ["a", "hello world, this is longer", "xyz", "0123456789" * 3, "q"]
    spec = build_strategy({"name": "greedy", "max_new_tokens": 30})
    ref = hf_greedy(model, tok, texts, 30)
    lengths = [len(r) for r in ref]
    assert min(lengths) < 30 and max(lengths) == 30, lengths  # the EOS branch and the length branch
    for bs in (1, 2, 5):
        outs, _ = ours(model, tok, texts, spec, batch_size=bs)
        assert [o.token_ids for o in outs] == ref
        for o in outs:
            assert o.finish_reason == ("eos" if o.token_ids and o.token_ids[-1] == tok.eos_token_id else "length")


def test_eos_finish_reason_and_no_padding_in_output(tiny):
    model, tok = eos_happy_copy(tiny, 0.5)
    spec = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 40})
    outs, _ = ours(model, tok, ["ab", "cd", "efg", "h"] * 4, spec, seed=3)
    reasons = {o.finish_reason for o in outs}
    assert reasons == {"eos", "length"}
    for o in outs:
        if o.finish_reason == "eos":
            assert o.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in o.token_ids[:-1]
        else:
            assert len(o.token_ids) == 40
        assert tok.pad_token_id not in o.token_ids


def test_seeded_sampling_reproduces_and_seeds_differ(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "topp", "do_sample": True, "top_p": 0.9, "max_new_tokens": 16})
    a, _ = ours(model, tok, PROMPTS, spec, seed=1)
    b, _ = ours(model, tok, PROMPTS, spec, seed=1, batch_size=2)
    c, _ = ours(model, tok, PROMPTS, spec, seed=2)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_stop_strings_cut_at_the_completing_token(tiny):
    model, tok = tiny
    free_spec = build_strategy({"name": "greedy", "max_new_tokens": 30})
    free, _ = ours(model, tok, PROMPTS, free_spec)
    texts = [tok.decode(o.token_ids) for o in free]
    # A stop string taken from the middle of the first row's free-running text.
    stop = texts[0][10:13]
    spec = build_strategy({"name": "greedy", "max_new_tokens": 30, "stop": [stop]})
    outs, _ = ours(model, tok, PROMPTS, spec)
    for o, f, t in zip(outs, free, texts):
        if stop in t:
            assert o.finish_reason == "stop"
            assert stop in tok.decode(o.token_ids) and stop not in tok.decode(o.token_ids[:-1])
            assert o.token_ids == f.token_ids[: len(o.token_ids)]
        else:
            assert o.token_ids == f.token_ids
    assert outs[0].finish_reason == "stop"


def test_telemetry_matches_direct_computation(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "topk", "do_sample": True, "top_k": 5, "max_new_tokens": 6})
    outs, _ = ours(model, tok, PROMPTS[:2], spec, record=("all",), seed=4)
    o = outs[0]
    ids = tok(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        for k, t in enumerate(o.token_ids):
            logits = model(torch.tensor([ids + o.token_ids[:k]])).logits[0, -1].float()
            raw = torch.log_softmax(logits, -1)
            top = torch.topk(logits, 5)
            proc = torch.full_like(logits, float("-inf")).scatter(0, top.indices, top.values)
            lp = torch.log_softmax(proc, -1)
            tel = o.telemetry
            assert tel["kept"][k] == 5
            assert tel["rank"][k] == int((logits > logits[t]).sum())
            assert abs(tel["logprob_raw"][k] - raw[t].item()) < 1e-4
            assert abs(tel["logprob"][k] - lp[t].item()) < 1e-4
            assert abs(tel["removed_mass"][k] - (1 - raw[top.indices].exp().sum().item())) < 1e-4
            p = lp.exp()[top.indices]
            assert abs(tel["entropy"][k] - float(-(p * p.log()).sum())) < 1e-4


def test_no_telemetry_when_not_asked(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "greedy", "max_new_tokens": 4})
    outs, _ = ours(model, tok, PROMPTS[:2], spec)
    assert all(o.telemetry is None for o in outs)


def test_max_time_marks_rows(tiny):
    model, tok = tiny  # min_new_tokens holds EOS back: only the time limit can end the row early
    spec = build_strategy({"name": "greedy", "max_new_tokens": 400, "min_new_tokens": 400, "max_time": 1e-6})
    outs, _ = ours(model, tok, ["abc"], spec)
    assert outs[0].finish_reason == "time" and 0 < len(outs[0].token_ids) < 400


def stop_case(tiny, n=30):
    """(free-running greedy outputs, a stop string from the middle of the first row's text)."""
    model, tok = tiny
    free, _ = ours(model, tok, PROMPTS, build_strategy({"name": "greedy", "max_new_tokens": n}))
    return free, tok.decode(free[0].token_ids)[10:13]


def test_a_large_host_work_interval_still_stops_at_the_stop_string(tiny):
    """The stop-string window covers every token since the last check: with sync_every=32 a row whose
    stop string completes at token ~12 leaves at the first host work, not at the length limit."""
    model, tok = tiny
    free, stop = stop_case(tiny, n=100)
    spec = build_strategy({"name": "greedy", "max_new_tokens": 100, "stop": [stop]})
    outs, stats = ours(model, tok, PROMPTS[:1], spec, batch_size=1, sync_every=32)
    cut = len(outs[0].token_ids)
    assert outs[0].finish_reason == "stop" and outs[0].token_ids == free[0].token_ids[:cut]
    assert cut + 32 < 100 and stats.steps <= cut + 32  # left at the first host work after the stop


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16])
def test_stop_strings_do_not_depend_on_the_host_work_interval(tiny, k):
    model, tok = tiny
    free, stop = stop_case(tiny)
    spec = build_strategy({"name": "greedy", "max_new_tokens": 30, "stop": [stop]})
    ref, _ = ours(model, tok, PROMPTS, spec, batch_size=1, sync_every=1)
    assert ref[0].finish_reason == "stop" and len(ref[0].token_ids) < 30
    for cont in (True, False):
        outs, _ = ours(model, tok, PROMPTS, spec, batch_size=2, sync_every=k, continuous=cont)
        assert [o.token_ids for o in outs] == [o.token_ids for o in ref]
        assert [o.finish_reason for o in outs] == [o.finish_reason for o in ref]


def test_batches_keep_a_prompts_rows_together():
    from decodebench.decoding.engine import iter_batches

    reqs = [Request(prompt_id=f"p{k}", prompt_ids=[1] * (1 + k % 3), sample_index=s) for k in range(5) for s in range(3)]
    batches = [idx for idx, _ in iter_batches(reqs, 8, whole_prompts=True)]
    assert sorted(i for b in batches for i in b) == list(range(15))
    for b in batches:
        assert len(b) <= 8
        for pid in {reqs[i].prompt_id for i in b}:
            assert sum(reqs[i].prompt_id == pid for i in b) == 3
