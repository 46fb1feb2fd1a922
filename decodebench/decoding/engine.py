"""The generation loop: prefill, step, KV cache, finished rows; and the batch driver around it.

Shapes: B rows (prompt x sample), T0 padded prompt width, V vocabulary. Prompts are LEFT-padded so every
row's next token sits in the last column; position ids count real tokens only, so a row's positions do
not depend on its batch-mates' lengths.

    prefill  input_ids [B, T0], attention_mask [B, T0] -> logits [B, V] (float32), cache
    step     tokens [B] -> logits [B, V], cache grows by one column

The step does no `.item()` or `.tolist()`: finished rows keep running (their tokens are replaced by the
pad id) and "all rows finished" is read from a pinned host copy made one step earlier without blocking,
so the loop never waits on the device. Search methods (beam, contrastive, ...) reuse `ModelRunner`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from decodebench.decoding.chain import DecodeState, LogitsChain
from decodebench.decoding.params import SamplingParams
from decodebench.decoding.recorder import make_recorder
from decodebench.decoding.sampling import row_keys, sample
from decodebench.decoding.stopping import StopChecker
from decodebench.decoding.strategies import STRATEGIES, StrategySpec, load_builtin_methods


@dataclass
class Request:
    """One row to generate: a prompt's token ids, which sample of it, its settings and seed."""

    prompt_id: str
    prompt_ids: list[int]
    sample_index: int = 0
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0


@dataclass
class Output:
    token_ids: list[int]
    finish_reason: str  # eos | length | stop | time
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
    decode_s: float = 0.0  # whole batches, prefill included
    steps: int = 0
    chain: list = field(default_factory=list)  # transforms applied, in order (resolved)
    ttft_s: list = field(default_factory=list)  # per batch: start to first sampled token
    step_ms: list = field(default_factory=list)  # per batch: mean time of one decode step


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


class ModelRunner:
    """The model's forward with a KV cache: the primitives every search method builds on."""

    def __init__(self, model, *, hidden_states: bool = False):
        self.model = model
        self.device = next(model.parameters()).device
        self.hidden_states = hidden_states
        self.forward_passes = 0
        self.tokens_processed = 0

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        from transformers import DynamicCache

        cache = cache if cache is not None else DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
            output_hidden_states=self.hidden_states,
        )
        self.forward_passes += 1
        self.tokens_processed += int(input_ids.numel())
        # float32 logits, as transformers' generate uses for its processors
        logits = out.logits[:, -1, :].to(dtype=torch.float32)
        hidden = out.hidden_states[-1] if self.hidden_states else None
        return logits, out.past_key_values, hidden

    @torch.inference_mode()
    def prefill(self, input_ids, attention_mask):
        return self._forward(input_ids, attention_mask, positions(attention_mask), None)

    @torch.inference_mode()
    def step(self, tokens, attention_mask, cache):
        """tokens [B] (or [B, 1]); attention_mask [B, T] already includes the new column."""
        pos = (attention_mask.long().sum(-1, keepdim=True) - 1).clamp(min=0)
        return self._forward(tokens.view(-1, 1), attention_mask, pos, cache)


class AsyncFlag:
    """Reads a device bool one step late without blocking (pinned host copy + event)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None

    def push(self, value: torch.Tensor) -> None:
        self.host.copy_(value, non_blocking=self.cuda)
        if self.cuda:
            self.event.record()

    def ready_and_true(self) -> bool:
        if self.cuda and not self.event.query():
            return False
        return bool(self.host)


def eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


@dataclass
class BatchContext:
    """What a search method needs besides the rows: the runner, special ids, stop rules, optional hooks."""

    runner: ModelRunner
    eos: list[int]
    pad_id: int
    vocab_size: int
    stop: Optional[StopChecker] = None
    record: tuple[str, ...] = ()
    streamer: Optional[Callable] = None  # streaming.Streamer: called as streamer(step, tokens [B], finished [B])
    stats: BatchStats = field(default_factory=BatchStats)
    sync: Callable = lambda: None  # device sync, used only for once-per-batch timings

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


class RowTracker:
    """Per-row bookkeeping of a one-token-per-step loop: the output buffer, lengths, EOS, stop rules,
    streaming, the all-finished flag read one step late (no sync) and the time limit."""

    def __init__(self, batch: int, spec: StrategySpec, ctx: "BatchContext", t0: float, streamer=None):
        dev = ctx.runner.device
        self.spec, self.ctx, self.t0, self.streamer = spec, ctx, t0, streamer
        self.out = torch.full((batch, spec.max_new_tokens), ctx.pad_id, dtype=torch.long, device=dev)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.hit_eos = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=dev)
        self.eos = torch.tensor(ctx.eos or [-1], device=dev)
        self.flag = AsyncFlag(dev)
        self.deadline = t0 + spec.max_time if spec.max_time else None
        self.timed_out, self.steps, self.t_first = False, 0, t0

    def push(self, step: int, tok: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Record this step's tokens (finished rows get the pad id); returns (tokens, stop the loop?)."""
        ctx, fin = self.ctx, self.finished
        tok = torch.where(fin, torch.full_like(tok, ctx.pad_id), tok)
        self.out[:, step] = tok
        self.lengths += (~fin).long()
        is_eos = torch.isin(tok, self.eos) & ~fin
        self.hit_eos |= is_eos
        fin |= is_eos
        self.steps = step + 1
        if step == 0:
            self.t_first = ctx.first_token(self.t0)
        if ctx.stop is not None:
            fin |= ctx.stop.update(self.out, self.lengths, step, fin)
        if self.streamer is not None:
            self.streamer(step, tok, fin)
        self.flag.push(fin.all())
        if step + 1 == self.spec.max_new_tokens or self.flag.ready_and_true():
            return tok, True
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.timed_out = True
            return tok, True
        return tok, False

    def outputs(self, telemetry: Optional[dict]) -> list[Output]:
        """Per row: tokens up to EOS, a stop string's last token or the limit, and why it finished."""
        ctx, spec = self.ctx, self.spec
        ctx.decode_done(self.t_first, self.steps)
        stop_at = ctx.stop.final_lengths(self.out, self.lengths) if ctx.stop is not None else None
        outs = []
        rows = zip(self.out.tolist(), self.lengths.tolist(), self.hit_eos.tolist())
        for i, (row, n, eos) in enumerate(rows):
            reason = "eos" if eos else "length"
            if stop_at is not None and stop_at[i] is not None and stop_at[i] <= n:
                n, reason = stop_at[i], ctx.stop.reason(i)  # "stop" or a user criterion's name
            elif self.timed_out and not eos and n < spec.max_new_tokens:
                reason = "time"
            outs.append(Output(token_ids=row[:n], finish_reason=reason,
                               telemetry=None if telemetry is None else {k: v[i][:n] for k, v in telemetry.items()}))
        return outs


@torch.inference_mode()
def sampling_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    """Greedy and sampled decoding for one batch (each row its own settings and seed)."""
    runner, dev = ctx.runner, ctx.runner.device
    t0 = time.perf_counter()
    ids, attn = pack_left([r.prompt_ids for r in reqs], ctx.pad_id, dev)
    B, width = ids.shape
    chain = LogitsChain.from_rows([r.params for r in reqs], vocab_size=ctx.vocab_size,
                                  eos_token_id=ctx.eos, device=dev)
    keys = request_keys(reqs, dev)
    recorder = make_recorder(ctx.record, B, spec.max_new_tokens, dev)
    rows = RowTracker(B, spec, ctx, t0, ctx.streamer)

    logits, cache, _ = runner.prefill(ids, attn)
    for step in range(spec.max_new_tokens):
        processed = chain(logits, DecodeState(input_ids=ids, attention_mask=attn, prompt_width=width, step=step))
        tok = sample(processed, keys, step, chain.sample_mode, support=chain.support)
        recorder.on_step(step, logits, processed, tok, ~rows.finished)
        tok, done = rows.push(step, tok)
        chain.update(tok)
        if done:
            break
        ids = torch.cat([ids, tok[:, None]], dim=1)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        logits, cache, _ = runner.step(tok, attn, cache)
    chain.raise_if_nan()
    ctx.stats.chain = list(chain.names)
    return rows.outputs(recorder.finalize())


STRATEGIES.register("sampling", sampling_batch)


def iter_batches(reqs: list[Request], batch_size: int, whole_prompts: bool = False):
    """Rows grouped by prompt length (less padding); yields (indices, rows). Results do not depend on it.

    With `whole_prompts` (search methods, which run once per prompt over its rows) a prompt's rows are
    never split across batches; a batch then holds at most `batch_size` rows unless one prompt has more.
    """
    order = sorted(range(len(reqs)), key=lambda i: (len(reqs[i].prompt_ids), i))
    if not whole_prompts:
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            yield idx, [reqs[i] for i in idx]
        return
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(reqs[i].prompt_id, []).append(i)
    batch: list[int] = []
    for g in groups.values():
        if batch and len(batch) + len(g) > batch_size:
            yield batch, [reqs[j] for j in batch]
            batch = []
        batch.extend(g)
    if batch:
        yield batch, [reqs[j] for j in batch]


def generate(model, tokenizer, reqs: list[Request], spec: StrategySpec, *, batch_size: int = 8,
             record: Sequence[str] = (), progress=None, on_batch: Optional[Callable] = None,
             streamer_factory: Optional[Callable] = None) -> tuple[list[Output], BatchStats]:
    """Run every request through the strategy's search method, `batch_size` rows at a time.

    `on_batch(indices, outputs)` is called after each batch (the runner appends results to disk there,
    so a failure later in a run never loses what was computed). `progress` is a tqdm-like bar or None.
    """
    load_builtin_methods()
    method = STRATEGIES.get(spec.method)
    runner = ModelRunner(model, hidden_states=getattr(method, "needs_hidden_states", False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids(model, tokenizer)[0]
    vocab = model.get_output_embeddings().weight.shape[0]
    stats = BatchStats()
    results: list[Optional[Output]] = [None] * len(reqs)
    sync = torch.cuda.synchronize if runner.device.type == "cuda" else (lambda: None)
    for idx, rows in iter_batches(reqs, batch_size, whole_prompts=spec.method != "sampling"):
        stop = StopChecker.for_spec(tokenizer, spec)  # stop strings and user criteria, or None
        ctx = BatchContext(runner=runner, eos=eos_ids(model, tokenizer), pad_id=pad, vocab_size=vocab,
                           stop=stop, record=tuple(record), stats=stats, sync=sync,
                           streamer=streamer_factory(rows) if streamer_factory else None)
        t0 = time.perf_counter()
        outs = method(rows, spec, ctx)
        if hasattr(ctx.streamer, "close"):
            ctx.streamer.close(outs)  # flush and end every row (idempotent; streaming.Streamer)
        sync()
        stats.decode_s += time.perf_counter() - t0
        stats.rows += len(rows)
        stats.prompt_tokens += sum(len(r.prompt_ids) for r in rows)
        stats.generated_tokens += sum(len(o.token_ids) for o in outs)
        for i, o in zip(idx, outs):
            results[i] = o
        if on_batch is not None:
            on_batch(idx, outs)
        if progress is not None:
            progress.update(len(rows))
    stats.forward_passes = runner.forward_passes
    stats.tokens_processed = runner.tokens_processed
    return results, stats  # type: ignore[return-value]
