"""Prompts x samples -> requests (with their recorded seeds), and responses -> generation records."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from decodebench import results
from decodebench.api_models.params import sampling_body
from decodebench.api_models.settings import has_n
from decodebench.api_models.store import request_key

SEED_MOD = 2**31  # llama.cpp takes a uint32 seed, OpenAI an int64: this range fits both
# what each server's returned log-probs are (llama.cpp: softmax of the raw logits before its sampler chain;
# vLLM: raw unless started with --logprobs-mode; the OpenAI API does not say)
LOGPROBS_KIND = {"llamacpp": "raw, pre-sampling", "vllm": "raw, pre-sampling (unless --logprobs-mode)",
                 "sglang": "raw, pre-sampling", "openai": "unspecified", "generic": "unspecified"}


def derive_seed(seed: int, prompt_id: str, sample: int) -> int:
    """A request's seed from (run seed, prompt, sample): the same sample asks with the same seed anywhere."""
    h = hashlib.sha256(f"{seed}|{prompt_id}|{sample}".encode()).digest()
    return int.from_bytes(h[:8], "little") % SEED_MOD


@dataclass(frozen=True)
class Job:
    key: str
    body: dict
    prompt_id: str
    samples: tuple[int, ...]  # the sample indices its choices fill, in choice order


def _prompt_part(m, text: str, system_prompt) -> dict:
    if m.endpoint == "completions":
        return {"prompt": text}
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {"messages": messages + [{"role": "user", "content": text}]}


def _logprob_part(m) -> dict:
    if not m.logprobs:
        return {}
    if m.endpoint == "completions":
        return {"logprobs": int(m.top_logprobs)}
    return {"logprobs": True, **({"top_logprobs": int(m.top_logprobs)} if m.top_logprobs else {})}


def build_jobs(m, spec, prompts, seed: int, system_prompt=None) -> list[Job]:
    """One request per prompt with `n` (servers that have it), else one per (prompt, sample)."""
    native, extra = sampling_body(spec, m.server)
    n = spec.num_return_sequences
    groups = [(0, tuple(range(n)))] if has_n(m) else [(s, (s,)) for s in range(n)]
    jobs = []
    for p in prompts:
        for first, samples in groups:
            body = {"model": m.name, **_prompt_part(m, p.text, system_prompt), "max_tokens": spec.max_new_tokens,
                    "n": len(samples), "seed": derive_seed(seed, p.id, first), **native, **_logprob_part(m)}
            if extra:
                body["extra_body"] = extra
            jobs.append(Job(request_key(m.endpoint, m.server, body), body, p.id, samples))
    return jobs


def finish_reason(raw: str, spec) -> str:
    """decodebench's vocabulary: a server's `stop` is EOS, or a stop string when the strategy has some."""
    if raw == "length":
        return "length"
    if raw == "stop":
        return "stop" if spec.stop else "eos"
    return str(raw)


def entropy_lower_bound(top: dict) -> float:
    """Entropy (nats) of a step from its top log-probs, the unseen mass as one more outcome: a lower bound
    on the full distribution's entropy, exact when the top list holds all the mass."""
    ps = [math.exp(v) for v in top.values() if v is not None and math.isfinite(v)]
    rest = max(0.0, 1.0 - sum(ps))
    return -sum(p * math.log(p) for p in ps + [rest] if p > 0)


def make_records(job: Job, resp: dict, prompt, spec, m, record: tuple) -> list[results.GenerationRecord]:
    body = {k: v for k, v in job.body.items() if k not in ("messages", "prompt")}
    out = []
    for choice, sample in zip(resp["choices"], job.samples):
        lps = choice["logprobs"]
        ids = [e["id"] for e in lps] if lps and all(e.get("id") is not None for e in lps) else None
        n_tokens = len(lps) if lps else (resp.get("usage", {}).get("completion_tokens") if job.body["n"] == 1 else None)
        tele = {}
        if "entropy" in record and lps:
            tele["entropy"] = [entropy_lower_bound(e["top"]) for e in lps]
        if "logprob" in record and lps:
            tele["logprob"] = [e["logprob"] for e in lps]
        extra = {"api_request": body, "api_finish_reason": choice["finish_reason"],
                 "served_model": resp.get("model"), "system_fingerprint": resp.get("system_fingerprint"),
                 "request_key": job.key}
        if lps:
            extra.update(logprobs=[e["logprob"] for e in lps], logprobs_kind=LOGPROBS_KIND[m.server])
            if m.top_logprobs:
                extra["top_logprobs"] = [e["top"] for e in lps]
        extra.update(stream_row_metrics(choice, n_tokens))
        out.append(results.GenerationRecord(
            prompt_id=prompt.id, prompt=prompt.text, sample_index=sample, text=choice["text"], token_ids=ids,
            num_tokens=n_tokens, finish_reason=finish_reason(choice["finish_reason"], spec),
            reference=prompt.reference, category=prompt.category, telemetry=tele or None, extra=extra))
    return out


def stream_row_metrics(choice: dict, n_tokens) -> dict:
    """Per row: time to first token and output tokens per second after it (streamed responses only)."""
    times = choice.get("chunk_times_s")
    if not times:
        return {}
    out = {"ttft_s": times[0]}
    if n_tokens and n_tokens > 1 and times[-1] > times[0]:
        out["output_tokens_per_s"] = (n_tokens - 1) / (times[-1] - times[0])
    return out
