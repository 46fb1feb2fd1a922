"""Requests through the official `openai` client: streaming, retries with backoff, a rate limit.

Concurrency is asyncio (`openai.AsyncOpenAI`), not threads: the work is waiting on sockets, so one event
loop holds hundreds of streaming requests without a thread each; the rate limiter, the progress bar and the
append-only response file are touched from that one thread, so they need no locks; and a fatal error
(a wrong key, a dead server) cancels every request in flight at once, where threads would run on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import openai
import openai._base_client as _base

_HTTPX = getattr(_base, "httpx2", None) or getattr(_base, "httpx")
for _name in ("httpx", "httpx2", "openai"):  # one INFO line per request would bury the progress bar
    logging.getLogger(_name).setLevel(logging.WARNING)
RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError,
             _HTTPX.TransportError)


class ApiFailure(RuntimeError):
    """A request that cannot succeed (bad key, refused body, malformed reply, dead server): one line."""


@dataclass
class Backoff:
    base_s: float
    max_s: float
    rng: random.Random

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        """Full jitter (AWS's "exponential backoff and jitter"), never shorter than the server's Retry-After."""
        d = self.rng.uniform(0, min(self.max_s, self.base_s * 2 ** attempt))
        return max(d, retry_after or 0.0)


def retry_after(e: BaseException) -> Optional[float]:
    resp = getattr(e, "response", None)
    value = resp.headers.get("retry-after") if resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RateLimit:
    """Requests per minute (start times spaced 60/rpm apart) and usage tokens per minute (a 60 s window)."""

    def __init__(self, rpm: Optional[float], tpm: Optional[float], clock=time.monotonic):
        self.gap = 60.0 / rpm if rpm else 0.0
        self.tpm, self.clock = tpm, clock
        self.next_start = 0.0
        self.used: deque = deque()  # (time, tokens)

    async def acquire(self) -> None:
        now = self.clock()
        start = max(now, self.next_start)
        self.next_start = start + self.gap
        if start > now:
            await asyncio.sleep(start - now)
        while self.tpm and self._window() >= self.tpm:
            await asyncio.sleep(max(self.used[0][0] + 60.0 - self.clock(), 0.01))

    def spend(self, tokens: int) -> None:
        if self.tpm and tokens:
            self.used.append((self.clock(), tokens))

    def _window(self) -> float:
        while self.used and self.used[0][0] <= self.clock() - 60.0:
            self.used.popleft()
        return sum(t for _, t in self.used)


def _choice_lps(lp: Any) -> list[dict]:
    """Per-token entries {token, logprob, top: {token: logprob}, id} from chat or completions log-probs."""
    if not lp:
        return []
    if lp.get("content") is not None:  # chat form (llama.cpp's completions too)
        return [{"token": e.get("token"), "logprob": e.get("logprob"), "id": e.get("id"),
                 "top": {t["token"]: t["logprob"] for t in (e.get("top_logprobs") or [])}} for e in lp["content"]]
    tokens = lp.get("tokens") or []  # the legacy completions form
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return [{"token": t, "logprob": v, "id": None, "top": dict(top or {})}
            for t, v, top in zip(tokens, lp.get("token_logprobs") or [], tops)]


class Accumulator:
    """One response's choices, built from stream chunks (or one whole response), with per-choice timings."""

    def __init__(self, t0: float):
        self.t0, self.choices, self.meta = t0, {}, {}

    def add(self, d: dict, now: float) -> None:
        for key in ("model", "system_fingerprint", "id"):
            if d.get(key):
                self.meta[key] = d[key]
        if d.get("usage"):
            self.meta["usage"] = {k: v for k, v in d["usage"].items() if isinstance(v, int)}
        for ch in d.get("choices") or []:
            c = self.choices.setdefault(int(ch.get("index") or 0), {"text": [], "lps": [], "finish": None, "t": []})
            piece = (ch.get("delta") or {}).get("content") if "delta" in ch else None
            if piece is None:
                piece = ch.get("text") if "text" in ch else (ch.get("message") or {}).get("content")
            if piece:
                c["text"].append(piece)
                c["t"].append(now - self.t0)
            c["lps"] += _choice_lps(ch.get("logprobs"))
            if ch.get("finish_reason"):
                c["finish"] = ch["finish_reason"]

    def result(self, streamed: bool) -> dict:
        if not self.choices:
            raise ValueError("no choices in the response")
        out = []
        for i in sorted(self.choices):
            c = self.choices[i]
            if c["finish"] is None:
                raise ValueError(f"choice {i} has no finish_reason (the response ended early)")
            out.append({"index": i, "text": "".join(c["text"]), "finish_reason": c["finish"],
                        "logprobs": c["lps"], "chunk_times_s": c["t"] if streamed else None})
        return {**self.meta, "choices": out, "latency_s": time.perf_counter() - self.t0}


def make_client(base_url: str, key: str, timeout: float):
    """The official client with its own retries off: decodebench retries, so it can count and back off."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)


async def send(client, endpoint: str, body: dict, stream: bool) -> dict:
    api = client.chat.completions if endpoint == "chat" else client.completions
    t0 = time.perf_counter()
    acc = Accumulator(t0)
    if not stream:
        resp = await api.create(**body)
        acc.add(resp.model_dump(), time.perf_counter())
        return acc.result(False)
    stream_it = await api.create(**body, stream=True, stream_options={"include_usage": True})
    async for chunk in stream_it:
        acc.add(chunk.model_dump(), time.perf_counter())
    return acc.result(True)


async def send_with_retries(client, endpoint: str, body: dict, stream: bool, m, backoff: Backoff,
                            limit: RateLimit, counts: dict) -> dict:
    """One request until it succeeds; retryable failures back off, the rest raise ApiFailure."""
    for attempt in range(int(m.max_retries) + 1):
        await limit.acquire()
        counts["requests"] += 1
        try:
            res = await send(client, endpoint, body, stream)
        except RETRYABLE as e:
            if attempt == int(m.max_retries):
                raise
            counts["retries"] += 1
            await asyncio.sleep(backoff.delay(attempt, retry_after(e)))
            continue
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise ApiFailure(f"model.api_key_env: the server at {m.base_url} refused the key "
                             f"(HTTP {e.status_code}); check the key in ${m.api_key_env}") from None
        except openai.APIStatusError as e:
            raise ApiFailure(f"model: the server at {m.base_url} refused a request (HTTP {e.status_code}: "
                             f"{_first_line(e.message)}); check model.name and the strategy") from None
        except (openai.APIResponseValidationError, ValueError, KeyError, TypeError) as e:
            raise ApiFailure(f"model.base_url: the server at {m.base_url} sent a malformed response "
                             f"({_first_line(str(e))})") from None
        limit.spend(int(res.get("usage", {}).get("total_tokens") or 0))
        return res
    raise AssertionError("unreachable")


def _first_line(s: str) -> str:
    return " ".join(str(s).split())[:200]
