"""DeepConf against the authors' functions (facebookresearch/deepconf, MIT licence): `compute_confidence`,
`compute_least_grouped`, the voting functions of `deepconf/utils.py` and `ConfPerReqLogitsProcessor` of
`deepconf/processors.py`, ported below with their arithmetic unchanged (vLLM's logprob dicts become plain
dicts; the voting's fixed 2048-token window becomes a parameter with that default)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections import Counter, deque
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from decodebench.decoding.search.votes import VOTES, conf_bar, group_confidences, vote
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from decodebench.selectors import select_records
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401


# ---------------------------------------------------------------- the authors' functions (ported)
def ref_compute_confidence(logprobs):
    confs = []
    for token_logprobs in logprobs:
        if token_logprobs:
            mean_logprob = np.mean([lp.logprob for lp in token_logprobs.values()])
            confs.append(round(-mean_logprob, 3))
    return confs


def ref_compute_least_grouped(confs, group_size):
    if len(confs) < group_size:
        return [sum(confs) / len(confs)] if confs else [0]
    return [round(sum(confs[i:i + group_size]) / group_size, 3) for i in range(len(confs) - group_size + 1)]


def ref_mean(t):
    return np.mean(t["confs"]) if t.get("confs") else 0.0


def ref_tail(t, tail_tokens=2048):
    c = t["confs"]
    return np.mean(c[-tail_tokens:] if len(c) > tail_tokens else c) if c else 0.0


def ref_bottom_window(t, window_size=2048, bottom_percent=0.1):
    confs = t["confs"]
    if not confs:
        return 0.0
    if len(confs) < window_size:
        return np.mean(confs)
    window_means = []
    current_sum = sum(confs[:window_size])
    window_means.append(current_sum / window_size)
    for i in range(1, len(confs) - window_size + 1):
        current_sum = current_sum - confs[i - 1] + confs[i + window_size - 1]
        window_means.append(current_sum / window_size)
    if bottom_percent == -1:
        return min(window_means)
    num_bottom = max(1, int(len(window_means) * bottom_percent))
    if num_bottom == 1:
        return min(window_means)
    return np.mean(np.partition(window_means, num_bottom - 1)[:num_bottom])


def ref_weighted_majority_vote(answers, weights):
    answer_weights = {}
    for answer, weight in zip(answers, weights):
        if answer is not None:
            answer_weights[str(answer)] = answer_weights.get(str(answer), 0.0) + float(weight)
    return max(answer_weights.keys(), key=lambda x: answer_weights[x]) if answer_weights else None


def ref_filter_top_confidence(traces, conf_fn, top_percent=0.1):
    confidences = [conf_fn(t) for t in traces]
    threshold = np.percentile(confidences, (1 - top_percent) * 100)
    return [t for t, c in zip(traces, confidences) if c >= threshold]


def ref_all_votes(traces, w=2048):
    """compute_all_voting_results: {method name: answer} (a weighted vote with no positive weight: absent)."""
    valid = [t for t in traces if t.get("extracted_answer")]
    if not valid:
        return {m: None for m in VOTES}
    answers = [t["extracted_answer"] for t in valid]
    fns = {"mean_confidence_weighted": ref_mean, "tail_confidence_weighted": ref_tail,
           "bottom_window_weighted": lambda t: ref_bottom_window(t, w),
           "min_window_weighted": lambda t: ref_bottom_window(t, w, -1)}
    out = {"majority": Counter(answers).most_common(1)[0][0]}
    for name, fn in fns.items():
        c = [fn(t) for t in valid]
        out[name] = ref_weighted_majority_vote(answers, c) if any(x > 0 for x in c) else None
    for name, fn in (("top10_tail_filtered", ref_tail), ("top10_bottom_window_filtered", fns["bottom_window_weighted"])):
        top = ref_filter_top_confidence(valid, fn)
        c = [fn(t) for t in top]
        out[name] = ref_weighted_majority_vote([t["extracted_answer"] for t in top], c) if any(x > 0 for x in c) else None
    return out


class RefConfProcessor:  # ConfPerReqLogitsProcessor
    def __init__(self, threshold, eos_token_id, conf_group_size, conf_topk):
        self.threshold, self.eos_token_id, self.conf_topk = threshold, eos_token_id, conf_topk
        self.conf_group_list, self.conf_grouped, self.conf_group_size = deque(maxlen=conf_group_size), 0.0, conf_group_size

    def compute_conf(self, logits):
        top_probs, _ = torch.topk(torch.softmax(logits, dim=-1), self.conf_topk, dim=-1)
        return -torch.log(top_probs).sum().item() / self.conf_topk

    def __call__(self, output_ids, logits):
        new_conf = self.compute_conf(logits)
        if len(self.conf_group_list) < self.conf_group_size:
            self.conf_group_list.append(new_conf)
            self.conf_grouped += new_conf
        else:
            self.conf_grouped -= self.conf_group_list.popleft()
            self.conf_group_list.append(new_conf)
            self.conf_grouped += new_conf
        if len(self.conf_group_list) >= self.conf_group_size and self.conf_grouped / len(self.conf_group_list) < self.threshold:
            val_to_keep = logits[self.eos_token_id].item()
            logits[:] = float("-inf")
            logits[self.eos_token_id] = val_to_keep
        return logits


# ---------------------------------------------------------------- helpers
def run(model, tok, texts, d, n, batch_size=64, seed=0):
    spec = build_strategy({"name": "dc", "method": "deepconf", "do_sample": True, "num_return_sequences": n, **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params, seed=seed)
            for i, x in enumerate(texts) for s in range(n)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=batch_size)
    return reqs, outs


@torch.inference_mode()
def raw_logits(model, prompt_ids, tokens):
    """Teacher-forced raw next-token logits `[len(tokens), V]` of each generated position."""
    ids = torch.tensor([list(prompt_ids) + list(tokens)])
    return model(ids).logits[0, len(prompt_ids) - 1:len(prompt_ids) - 1 + len(tokens)].float()


def vllm_logprobs(logits, k=20):
    lp = logits.log_softmax(-1).topk(k, dim=-1)
    return [{int(i): SimpleNamespace(logprob=float(v)) for v, i in zip(vals, ids)} for vals, ids in zip(lp.values, lp.indices)]


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("w", [2048, 3])
def test_votes_equal_the_authors_on_random_traces(w):
    rng = random.Random(w)
    for _ in range(40):
        n = rng.randint(1, 12)
        traces = [{"confs": [round(rng.uniform(0.1, 3.0), 3) for _ in range(rng.randint(0, 9))],
                   "extracted_answer": rng.choice(["1", "2", "3", None, ""])} for _ in range(n)]
        ref = ref_all_votes(traces, w)
        for m in VOTES:
            assert vote([t["extracted_answer"] for t in traces], [t["confs"] for t in traces], m, w) == ref[m], m
        for t in traces:
            assert group_confidences(t["confs"], w) == ref_compute_least_grouped(t["confs"], w)


def test_token_confidences_equal_the_authors():
    model, tok = peaky_tiny()
    reqs, outs = run(model, tok, TEXTS[:3], {"max_new_tokens": 10, "conf_topk": 20}, n=3)
    for r, o in zip(reqs, outs):
        ref = ref_compute_confidence(vllm_logprobs(raw_logits(model, r.prompt_ids, o.token_ids)))
        assert o.extra["deepconf_confs"] == pytest.approx(ref, abs=1.01e-3)
        assert o.extra["deepconf_min_conf"] == pytest.approx(min(ref_compute_least_grouped(ref, 2048)), abs=1.01e-3)


def test_offline_traces_are_the_sampling_strategys():
    model, tok = peaky_tiny()
    reqs, outs = run(model, tok, TEXTS[:3], {"max_new_tokens": 10, "temperature": 0.8}, n=4, seed=7)
    spec = build_strategy({"name": "s", "do_sample": True, "temperature": 0.8, "max_new_tokens": 10})
    plain, _ = generate(model, tok, [Request(r.prompt_id, r.prompt_ids, r.sample_index, spec.params, 7) for r in reqs],
                        spec, batch_size=5)
    assert [o.token_ids for o in outs] == [o.token_ids for o in plain]
    assert len({tuple(o.token_ids) for o in outs}) > 1  # the traces differ: the test says something


def test_online_mode_stops_where_the_authors_processor_does():
    model, tok = peaky_tiny()
    d = {"max_new_tokens": 12, "deepconf_mode": "online", "warmup_traces": 3, "window_size": 3,
         "confidence_percentile": 30}
    reqs, outs = run(model, tok, TEXTS[:3], d, n=7)
    _, offline = run(model, tok, TEXTS[:3], {"max_new_tokens": 12, "window_size": 3}, n=7)
    stops = 0
    for pid in {r.prompt_id for r in reqs}:
        rows = [i for i, r in enumerate(reqs) if r.prompt_id == pid]
        warm = [i for i in rows if reqs[i].sample_index < 3]
        bar = conf_bar([min(ref_compute_least_grouped(offline[i].extra["deepconf_confs"], 3)) for i in warm], 30)
        assert bar == pytest.approx(float(np.percentile([offline[i].extra["deepconf_min_conf"] for i in warm], 70)))
        for i in rows:
            o = outs[i]
            assert o.extra["deepconf_conf_bar"] == pytest.approx(bar, abs=1e-9)
            if i in warm:
                assert o.token_ids == offline[i].token_ids and o.finish_reason != "gconf_threshold"
                continue
            proc = RefConfProcessor(bar, tok.eos_token_id, 3, 20)
            forced = [bool(torch.isinf(proc([], lg.clone())).sum() == lg.numel() - 1)
                      for lg in raw_logits(model, reqs[i].prompt_ids, o.token_ids)]
            if o.finish_reason == "gconf_threshold":
                stops += 1
                assert forced[-1] and not any(forced[:-1]) and o.token_ids[-1] == tok.eos_token_id
                assert o.token_ids[:-1] == offline[i].token_ids[:len(o.token_ids) - 1]  # the same noise until then
            else:
                assert not any(forced) and o.token_ids == offline[i].token_ids
    assert stops > 0


@pytest.mark.parametrize("pattern", [r"([a-z])", r"(\S)"])
def test_selector_votes_as_the_authors(pattern):
    model, tok = peaky_tiny()
    reqs, outs = run(model, tok, TEXTS[:4], {"max_new_tokens": 8, "temperature": 1.5}, n=8)
    records = [{"prompt_id": r.prompt_id, "sample_index": r.sample_index, "text": tok.decode(o.token_ids),
                **o.extra} for r, o in zip(reqs, outs)]
    elected = set()
    for m in VOTES:
        search = {"selector": "deepconf", "deepconf_vote": m, "window_size": 2048, "answer_pattern": pattern,
                  "extractor": None}
        chosen = select_records(records, search)
        for c in chosen:
            group = [r for r in records if r["prompt_id"] == c["prompt_id"]]
            traces = [{"confs": r["deepconf_confs"], "extracted_answer": (re.findall(pattern, r["text"]) or [None])[-1]}
                      for r in group]
            assert c["selection"]["answer"] == ref_all_votes(traces)[m]
            assert c["selection"]["answer"] is None or re.findall(pattern, c["text"])[-1] == c["selection"]["answer"]
        elected.add(tuple(c["selection"]["answer"] for c in chosen))
    assert len(elected) > 1  # the votes disagree somewhere: the comparison says something


@pytest.mark.parametrize("d,key", [
    ({"deepconf_mode": "fast"}, "deepconf_mode"), ({"window_size": 0}, "window_size"),
    ({"deepconf_mode": "online", "warmup_traces": 4}, "warmup_traces"), ({"deepconf_vote": "best"}, "deepconf_vote"),
    ({"confidence_percentile": 101}, "confidence_percentile")])
def test_bad_settings_are_refused(d, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        build_strategy({"name": "dc", "method": "deepconf", "do_sample": True, "num_return_sequences": 4, **d})


def test_deepconf_selector_needs_the_deepconf_method():
    with pytest.raises(ValueError, match="^selector=deepconf votes"):
        build_strategy({"name": "x", "do_sample": True, "num_return_sequences": 4, "selector": "deepconf",
                        "extractor": "last_number"})


def test_cli_refuses_a_bad_mode_before_loading():
    r = subprocess.run([sys.executable, "-m", "decodebench", "strategy=deepconf", "strategy.deepconf_mode=fast",
                        "model=tiny", "logger=none"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "deepconf_mode must be offline or online" in r.stderr


def test_online_traces_do_not_depend_on_the_batch():
    model, tok = peaky_tiny()
    d = {"max_new_tokens": 10, "deepconf_mode": "online", "warmup_traces": 2, "window_size": 3,
         "confidence_percentile": 30}
    _, together = run(model, tok, TEXTS[:3], d, n=5, batch_size=64)
    _, apart = run(model, tok, TEXTS[:3], d, n=5, batch_size=1)  # one prompt's rows per batch
    assert [o.token_ids for o in together] == [o.token_ids for o in apart]
    assert [o.finish_reason for o in together] == [o.finish_reason for o in apart]
    assert "gconf_threshold" in {o.finish_reason for o in together}
