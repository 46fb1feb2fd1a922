"""An API run's metrics: throughput and streaming latencies from the responses, perplexity from the
server's log-probs, and best-of-n on those log-probs."""

from __future__ import annotations

import math
import statistics

import numpy as np

from decodebench.config import ConfigError


def _pct(values: list, q: float):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def api_metrics(responses: list[dict], counts: dict) -> dict:
    """Streaming metrics (time to first token, inter-token latency percentiles, output tokens per second per
    request), usage tokens, and the request counts of this invocation; the usual keys where they exist."""
    ttft, gaps, speeds, lat = [], [], [], []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for r in responses:
        lat.append(r["latency_s"])
        for k in usage:
            usage[k] += int((r.get("usage") or {}).get(k) or 0)
        for c in r["choices"]:
            t = c.get("chunk_times_s")
            if not t:
                continue
            ttft.append(t[0])
            gaps += [b - a for a, b in zip(t, t[1:])]
            n = len(c["logprobs"]) or len(t)
            if n > 1 and t[-1] > t[0]:
                speeds.append((n - 1) / (t[-1] - t[0]))
    generated = usage["completion_tokens"] or sum(len(c["logprobs"]) for r in responses for c in r["choices"])
    wall = counts["wall_s"]
    out = {
        "generated_tokens": float(generated),
        "generation_time_s": wall,
        # this invocation's requests only (responses found on disk cost no time)
        "tokens_per_s": counts["new_tokens"] / wall if counts["sent"] and wall > 0 else None,
        "time_to_first_token_s": statistics.median(ttft) if ttft else None,
        "time_to_first_token_p90_s": _pct(ttft, 90),
        "per_token_latency_ms": _pct(gaps, 50) * 1e3 if gaps else None,
        "inter_token_latency_p50_ms": _pct(gaps, 50) * 1e3 if gaps else None,
        "inter_token_latency_p90_ms": _pct(gaps, 90) * 1e3 if gaps else None,
        "inter_token_latency_p99_ms": _pct(gaps, 99) * 1e3 if gaps else None,
        "output_tokens_per_s_per_request": statistics.median(speeds) if speeds else None,
        "request_latency_p50_s": _pct(lat, 50),
        "usage_prompt_tokens": float(usage["prompt_tokens"]),
        "usage_completion_tokens": float(usage["completion_tokens"]),
        "usage_total_tokens": float(usage["total_tokens"]),
        "api_requests": float(counts["requests"]),
        "api_retries": float(counts["retries"]),
        "api_responses_on_disk": float(counts["cached"]),
    }
    return {k: v for k, v in out.items() if v is not None}


def perplexity_from_logprobs(records: list, url: str) -> dict:
    """exp(total NLL / tokens) over every generated token, pooled as the perplexity scorer pools it, from
    the log-probs the server returned (no local model)."""
    missing = sum(1 for r in records if not r.extra.get("logprobs"))
    if missing:
        raise ConfigError(f"scorers.perplexity: the server at {url} returned no log-probs for {missing} of "
                          f"{len(records)} rows; set scorers.perplexity.model=<a local model>, or drop perplexity "
                          "(the rows are saved: rerun with the same hydra.run.dir)")
    lps = [v for r in records for v in r.extra["logprobs"]]
    return {"perplexity": math.exp(-sum(lps) / len(lps)), "perplexity_tokens": float(len(lps))}


def select(records: list, search: dict) -> list[dict]:
    """selected.jsonl's rows: best_of_n on log-probs ranks by the server's mean log-prob per token; the other
    selectors (self_consistency, mbr, best_of_n with a reward) are the local ones, unchanged."""
    from decodebench.selectors import select_records

    lines = [r.to_json() for r in records]
    if search.get("selector") != "best_of_n" or search.get("reward") is not None:
        return select_records(lines, search)
    groups: dict = {}
    for r in lines:
        groups.setdefault(r["prompt_id"], []).append(r)
    out = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: r["sample_index"])
        scores = [float(np.mean(r["logprobs"])) if r.get("logprobs") else -math.inf for r in rows]
        i = max(range(len(scores)), key=lambda k: (scores[k], -k))  # ties: the earliest sample
        rec = dict(rows[i])
        rec.update(selected_sample_index=rows[i]["sample_index"], sample_index=0,
                   selection={"selector": "best_of_n", "scores": scores, "scored_by": "server log-probs"})
        out.append(rec)
    return out
