"""The shared primitives of the search methods: requests, outputs, statistics, the batch context, the
one-step-late host flag, and packing. Search-method modules import from here (and from kvcache.py); the
driver (driver.py) reaches them through the method registry, so no engine module imports a search module
for its registration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from decodebench.decoding.params.table import SamplingParams
from decodebench.decoding.sampling import row_keys
from decodebench.decoding.engine.stopping import StopChecker


@dataclass
class Request:
    """One row to generate: a prompt's token ids, which sample of it, its settings and seed."""

    prompt_id: str
    prompt_ids: list[int]
    sample_index: int = 0
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    negative_prompt_ids: Optional[list[int]] = None  # classifier-free guidance's unconditional prompt


def guided(r: Request) -> bool:
    """The row runs classifier-free guidance (guidance_scale 1 is off, its negative prompt unused)."""
    return r.params.guidance_scale not in (None, 1.0)


def unconditional_ids(r: Request) -> list[int]:
    """The unconditional sequence's prompt: the negative prompt or, without one, the prompt's last token
    (transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor`)."""
    return list(r.negative_prompt_ids) if r.negative_prompt_ids is not None else list(r.prompt_ids[-1:])


@dataclass
class Output:
    token_ids: list[int]
    finish_reason: str  # eos | length | stop | time | a stopping criterion's name
    score: Optional[float] = None  # sequence score (search methods)
    telemetry: Optional[dict] = None
    extra: dict = field(default_factory=dict)


@dataclass
class BatchStats:
    rows: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    tokens_processed: int = 0  # tokens fed through the model (prompt + every candidate/beam token)
    row_steps: int = 0  # rows in decode forwards: generated_tokens / row_steps is the row-step efficiency
    decode_s: float = 0.0  # whole batches, prefill included
    compile_s: float = 0.0  # torch.compile warm-up, kept apart from generation time
    steps: int = 0
    chain: list = field(default_factory=list)  # transforms applied, in order (resolved)
    ttft_s: list = field(default_factory=list)  # per batch: start to first sampled token
    step_ms: list = field(default_factory=list)  # per batch: mean time of one decode step
    batch_size: int = 0  # rows in the running batch (the largest)
    kv_bytes: int = 0  # the static KV state's size
    extra: dict = field(default_factory=dict)  # a method's own counters (speculative: drafts proposed, accepted)


def request_keys(reqs: Sequence[Request], device) -> torch.Tensor:
    """[B] noise keys from each row's (seed, prompt id, sample index): nothing else enters the noise."""
    return torch.cat([row_keys(r.seed, [r.prompt_id], [r.sample_index]) for r in reqs]).to(device)


def pack_left(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into input_ids [B, T0] and attention_mask [B, T0]."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only (as transformers' generate does for left padding)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


class AsyncFlag:
    """Reads device values one step late without blocking: a pinned host copy per step, and the event
    recorded after it. `read()` returns the copy pushed one call EARLIER once its event has completed
    (on CPU, at once), so the host never waits for the step it has just queued."""

    def __init__(self, device, shape=(), dtype=torch.bool):
        self.cuda = torch.device(device).type == "cuda"
        self.host = [torch.zeros(shape, dtype=dtype, pin_memory=self.cuda) for _ in range(2)]
        self.events = [torch.cuda.Event() if self.cuda else None for _ in range(2)]
        self.i = 0  # slot of the next push
        self.pushed = 0

    def push(self, value: torch.Tensor) -> None:
        self.host[self.i].copy_(value, non_blocking=self.cuda)
        if self.cuda:
            self.events[self.i].record()
        self.i ^= 1
        self.pushed += 1

    def read(self) -> Optional[torch.Tensor]:
        """The value pushed before the last push, if its copy is done; on CPU the last push. Else None."""
        if not self.cuda:
            return self.host[self.i ^ 1] if self.pushed else None
        if self.pushed < 2:
            return None
        prev = self.i  # the slot written two pushes ago is the one the next push overwrites
        return self.host[prev] if self.events[prev].query() else None

    def ready_and_true(self) -> bool:
        v = self.read()
        return v is not None and bool(v.all())


def eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


@dataclass
class BatchContext:
    """What a search method needs besides the rows: the runtime, special ids, stop rules, optional hooks."""

    runner: object  # kvcache.Runtime
    eos: list[int]
    pad_id: int
    vocab_size: int
    stop: Optional[StopChecker] = None
    record: tuple[str, ...] = ()
    streamer: Optional[Callable] = None  # streaming.Streamer: called as streamer(step, tokens [B], finished [B])
    stats: BatchStats = field(default_factory=BatchStats)
    sync: Callable = lambda: None  # device sync, used only for once-per-batch timings
    sync_every: int = 4  # host work (stop strings, streamers, time limit, all-finished) every k steps
    batch_size: int = 8  # rows in a running batch (continuous batching)
    max_new_tokens: int = 0  # the strategy's limit: sizes the static state
    tokenizer: object = None  # for transforms that need text (grammars, DRY's sequence breakers)
    continuous: bool = True
    compile_backend: object = None  # the running batch's compiled step (step.py), with compile=true
    share_histories: bool = False  # rows with one history run one forward (shared.py)

    def first_token(self, t0: float) -> float:
        """Record time to first token (one sync per batch); returns the time it was taken."""
        self.sync()
        now = time.perf_counter()
        self.stats.ttft_s.append(now - t0)
        return now

    def decode_done(self, t_first: float, steps: int) -> None:
        self.sync()
        self.stats.steps += steps
        if steps > 1:
            self.stats.step_ms.append(1000 * (time.perf_counter() - t_first) / (steps - 1))
