"""The engine: every request through its strategy's search method; continuous batching for the
one-token-per-step methods, whole-prompt batches for the searches.

    outs, stats = generate(model, tok, reqs, spec, batch_size=64)      # continuous batching
    outs, stats = generate(..., continuous=False)                        # static batches
    outs, stats = generate(..., sync_every=8)                            # host work every 8 steps

Sampling (greedy included) runs in `running.RunningBatch`: static KV state, one step with no host read,
and host work every `sync_every` steps, where finished rows give their slot to the next waiting
request. Results never depend on `batch_size`, `continuous` or `sync_every`: a row's noise is a function
of (seed, prompt, sample, step) only. Search methods (`strategies.SearchMethod`) get whole prompts per
batch (a search runs once per prompt over its rows).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from decodebench.decoding.engine.host_memory import keep_freed_memory
from decodebench.decoding.engine.kvcache import Runtime, check_model
from decodebench.decoding.engine.batch import (  # noqa: F401  (re-exported: the engine's public types)
    AsyncFlag, BatchContext, BatchStats, Output, Request, eos_ids, guided, pack_left, positions,
)
from decodebench.decoding.engine.running import run_sampling
from decodebench.decoding.engine.stopping import StopChecker
from decodebench.decoding.search.methods import METHODS
from decodebench.decoding.search.spec import StrategySpec
from decodebench.decoding.transforms.candidates import on_host


def iter_batches(reqs: list[Request], batch_size: int, whole_prompts: bool = False):
    """Rows grouped by prompt length (less padding); yields (indices, rows). Results do not depend on it.

    With `whole_prompts` (search methods, which run once per prompt over its rows) a prompt's rows are
    never split across batches; a batch then holds at most `batch_size` rows unless one prompt has more.
    """
    order = length_order(reqs)
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


def length_order(reqs: Sequence[Request]) -> list[int]:
    """Request indices by prompt length (stable): neighbours pad little and share prefills."""
    return sorted(range(len(reqs)), key=lambda i: (len(reqs[i].prompt_ids), i))


def kv_capacity(reqs: Sequence[Request], spec: StrategySpec, continuous: bool) -> int:
    """Columns of the static state: the longest prompt and max_new_tokens, plus room for refills to
    run a while before the columns are moved back (continuous batching)."""
    width = max(max(len(r.prompt_ids), len(r.negative_prompt_ids or ())) for r in reqs)
    # static batches: room for rows that finished but wait for the host work (few column moves)
    slack = max(spec.max_new_tokens, 64) if continuous else 32
    return width + spec.max_new_tokens + slack


# The CPU's "auto" batch: on a 2-core machine throughput stops growing past this (README, "The engine").
CPU_AUTO_BATCH = 64
CUDA_AUTO_CAP = 512


def kv_rows_per_request(reqs: Sequence[Request]) -> int:
    """2 with classifier-free guidance (each row's unconditional mirror runs beside it), else 1."""
    return 2 if any(guided(r) for r in reqs) else 1


def kv_bytes_per_row(model, capacity: int) -> int:
    """Bytes of static KV state one row needs for `capacity` columns."""
    c = model.config
    heads = getattr(c, "num_attention_heads", 1)
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    elem = next(model.parameters()).element_size()
    return 2 * c.num_hidden_layers * kv_heads * head_dim * capacity * elem


def free_memory(device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 << 30


def auto_batch_size(model, reqs: Sequence[Request], spec: StrategySpec, continuous: bool = True,
                    shared_points: int = 1) -> int:
    """The largest running batch whose static KV state (and logits) fits in 80% of the free memory, at
    most CPU_AUTO_BATCH on a CPU (measured) and at most the number of requests.

    `shared_points`: the rows are that many fused points' rows of the same prompts, and rows with one
    history share one forward (shared.py). The CPU's cap is about the rows a forward runs, so it is
    `CPU_AUTO_BATCH` per point then: with shared noise about half of a study's row-steps repeat another
    row's history (docs/studies.md), and the forward costs little more for 150 rows than for 64."""
    if not reqs:
        return 1
    device = next(model.parameters()).device
    per_row = kv_bytes_per_row(model, kv_capacity(reqs, spec, continuous)) * kv_rows_per_request(reqs)
    per_row += 4 * model.get_output_embeddings().weight.shape[0] * 4  # float32 logits and their transforms
    fit = max(1, int(0.8 * free_memory(device)) // max(per_row, 1))
    cap = CUDA_AUTO_CAP if device.type == "cuda" else CPU_AUTO_BATCH * max(1, int(shared_points))
    return max(1, min(fit, cap, len(reqs)))


def shares_histories(share_histories: bool | str, device: torch.device, compile: bool | str = False) -> bool:
    """Will `generate` let rows with one history share their forward (its `share_histories` rule)?"""
    if compile:  # a compiled step has static shapes: every row runs its own forward
        return False
    return on_host(device) if share_histories == "auto" else bool(share_histories)


def check_kv_fits(model, batch_size: int, reqs: Sequence[Request], spec: StrategySpec, continuous: bool) -> None:
    """A running batch whose KV state cannot fit is refused with the bytes it needs, before it starts."""
    device = next(model.parameters()).device
    need = kv_bytes_per_row(model, kv_capacity(reqs, spec, continuous)) * min(batch_size, len(reqs))
    need *= kv_rows_per_request(reqs)
    free = free_memory(device)
    if need > free:
        raise ValueError(f"batch_size: a running batch of {min(batch_size, len(reqs))} rows needs "
                         f"{need / 2**30:.1f} GiB of KV state, {free / 2**30:.1f} GiB is free; "
                         "lower batch_size or strategy.max_new_tokens, or use batch_size=auto")


def make_context(model, tokenizer, runner, spec, stats, *, record=(), streamer=None, sync_every=4,
                 batch_size=8, continuous=True) -> BatchContext:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids(model, tokenizer)[0]
    vocab = model.get_output_embeddings().weight.shape[0]
    sync = torch.cuda.synchronize if runner.device.type == "cuda" else (lambda: None)
    stop = StopChecker.for_spec(tokenizer, spec, every=sync_every, per_step=tokens_per_step(spec))
    return BatchContext(runner=runner, eos=eos_ids(model, tokenizer), pad_id=pad, vocab_size=vocab,
                        stop=stop, record=tuple(record), stats=stats, sync=sync,
                        streamer=streamer, sync_every=sync_every, batch_size=batch_size, continuous=continuous,
                        max_new_tokens=spec.max_new_tokens, tokenizer=tokenizer)


def tokens_per_step(spec) -> int:
    """Tokens a row may gain in one step: 1, or speculative decoding's drafts + 1 per round."""
    if spec.method != "speculative":
        return 1
    from decodebench.decoding.search.speculative import k_cap

    k = int(spec.search.get("num_assistant_tokens") or 1)
    return 1 + (k_cap(k) if spec.search.get("num_assistant_tokens_schedule") == "heuristic" else k)


def _first_device(model) -> torch.device:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def check_sync_every(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"sync_every must be a positive integer (steps between host checks), got {k!r}")
    return k


def make_runtime(method, model, spec: StrategySpec, **kw) -> Runtime:
    """The method's own Runtime (a second model, early-exit logits) or the plain one."""
    return method.runtime(model, spec, **kw) if method.runtime is not None else Runtime(model, **kw)


def generate(model, tokenizer, reqs: list[Request], spec: StrategySpec, *, batch_size: int = 8,
             record: Sequence[str] = (), progress=None, on_batch: Optional[Callable] = None,
             streamer_factory: Optional[Callable] = None, continuous: bool = True, sync_every: int = 4,
             compile: bool | str = False, share_histories: bool | str = "auto") -> tuple[list[Output], BatchStats]:
    """Run every request through the strategy's search method.

    `on_batch(indices, outputs)` is called as rows finish (the runner appends results to disk there, so a
    failure later in a run never loses what was computed). `progress` is a tqdm-like bar or None.
    Continuous batching serves sampling strategies; with a streamer or `max_time` (a per-batch limit)
    batches are static. `compile` runs the decode step under torch.compile (see compiled.py).
    `share_histories` (True, False or "auto": on a CPU) lets rows with one history (a prompt's fused points
    or samples, as long as they drew the same tokens) share one forward (shared.py); tokens are the same.
    """
    check_sync_every(sync_every)
    method = METHODS.get(spec.method)
    stats = BatchStats()
    results: list[Optional[Output]] = [None] * len(reqs)
    if not reqs:
        return [], stats
    if _first_device(model).type == "cpu":
        keep_freed_memory()  # wide batches' [B, V] tensors reuse freed memory, not fresh pages (host_memory.py)

    def deliver(idx, outs):
        for i, o in zip(idx, outs):
            results[i] = o
        stats.rows += len(idx)
        stats.prompt_tokens += sum(len(reqs[i].prompt_ids) for i in idx)
        stats.generated_tokens += sum(len(o.token_ids) for o in outs)
        if on_batch is not None:
            on_batch(list(idx), list(outs))
        if progress is not None:
            progress.update(len(idx))

    if method.unit == "row":
        check_model(model)
        runner = make_runtime(method, model, spec, hidden_states=method.needs_hidden_states,
                              static_shapes=bool(compile))
        backend = None if isinstance(compile, bool) else compile  # a backend name (or a callable, in tests)
        if compile and not runner.whole_step_ok():  # a runtime with its own forward: compile that forward
            from decodebench.decoding.engine.compiled import compile_decode

            compile_decode(runner, backend=backend)
        cont = continuous and streamer_factory is None and not spec.max_time
        ctx = make_context(model, tokenizer, runner, spec, stats, record=record, sync_every=sync_every,
                           batch_size=batch_size, continuous=cont)
        ctx.compile_backend = backend
        ctx.share_histories = shares_histories(share_histories, runner.device)
        t0 = time.perf_counter()
        run_sampling(reqs, spec, ctx, length_order(reqs),
                     lambda pairs: deliver([i for i, _ in pairs], [o for _, o in pairs]),
                     kv_capacity(reqs, spec, cont), streamer_factory)
        ctx.sync()
        stats.decode_s += time.perf_counter() - t0
    else:
        check_model(model)
        runner = make_runtime(method, model, spec, hidden_states=method.needs_hidden_states)
        for idx, rows in iter_batches(reqs, batch_size, whole_prompts=True):
            ctx = make_context(model, tokenizer, runner, spec, stats, record=record, sync_every=sync_every,
                               streamer=streamer_factory(rows) if streamer_factory else None)
            t0 = time.perf_counter()
            outs = method.run(rows, spec, ctx)
            if hasattr(ctx.streamer, "close"):
                ctx.streamer.close(outs)  # flush and end every row (idempotent; streaming.Streamer)
            ctx.sync()
            stats.decode_s += time.perf_counter() - t0
            stats.batch_size = max(stats.batch_size, len(rows))
            deliver(idx, outs)
    stats.compile_s = getattr(runner, "compile_s", 0.0)
    stats.decode_s -= stats.compile_s  # compile time is reported apart from generation time
    stats.forward_passes = runner.forward_passes
    stats.tokens_processed = runner.tokens_processed
    stats.row_steps = runner.row_steps
    return results, stats  # type: ignore[return-value]
