"""The decode step of the running batch, one function over the slot state, and its compiled form.

    step_core(rb, a)   chain -> sample -> record -> EOS / length / criteria -> write the token's column
                       -> forward, for slots [0, a); tensors only: no host read, no tensor built from
                       Python data, no host counter read (so `torch.compile(fullgraph=True)` takes it whole)
    host_after(rb, a)  the host's side of the same step: step and column counters, the finished flag's
                       copy, the forward counters (never inside the compiled graph)

With static shapes (`compile=true`) the step reads the whole `[a, C]` buffers (the attention window and
the penalties' history are every column; invalid columns are masked) and writes at the device column
`kv.col_t`, so one graph serves every step of a batch size. Batch sizes come in buckets (`buckets`):
the running batch is the first `a` slots, `a` rounded up to a bucket, and each bucket compiles once, as
vLLM captures one CUDA graph per padded batch size.

Host-side features stay outside the graph: a streamer (one read per step, by its nature) runs the step
eagerly; grammars (stateful transforms that read tokens on the host) run the step eagerly too.
"""

from __future__ import annotations

import logging
import time

import torch

from decodebench.decoding.transforms.chain import DecodeState
from decodebench.decoding.engine.row_tracker import record
from decodebench.decoding.engine.shared import copy_rows
from decodebench.decoding.sampling import sample, table_words

log = logging.getLogger("decodebench")


def buckets(slots: int) -> list[int]:
    """Batch sizes a compiled running batch of `slots` slots takes: powers of two below it, and itself."""
    out, b = [], 1
    while b < slots:
        out.append(b)
        b *= 2
    return out + [slots]


def bucket_for(n: int, slots: int) -> int:
    """The smallest bucket holding `n` running slots."""
    return next(b for b in buckets(slots) if b >= n)


def step_core(rb, a: int) -> None:
    """One decode step over slots `[0, a)` of the running batch `rb` (see the module docstring)."""
    kv, ctx, static = rb.kv, rb.ctx, rb.rt.static_shapes
    fin, n = rb.finished[:a], rb.lengths[:a]
    if static:
        ids, mask, width = rb.tokens[:a], rb.valid[:a], rb.gen_start[:a, None]
    else:
        ids, mask = rb.tokens[:a, kv.lo:kv.col], rb.valid[:a, kv.lo:kv.col]
        width = (rb.gen_start[:a] - kv.lo)[:, None]
    # the chain's count tables are kept by the engine (`counts_kept`): `step` keys nothing a graph reads
    state = DecodeState(input_ids=ids, attention_mask=mask, prompt_width=width, step=0 if static else rb.steps, row_step=n,
                        keys=rb.keys[:a])
    raw = rb.logits[:a]
    processed = rb.chain(rb.guided_logits(a), state)
    # the support and candidate paths pick rows by `nonzero` (CPU, eager): the compiled step races in full
    support, cands = (None, None) if static else (rb.chain.support, rb.chain.candidates)
    tok = sample(processed, rb.keys[:a], n, rb.chain.sample_mode, support=support, candidates=cands,
                 probe=rb.chain.truncates and not static, words=table_words(rb.words[:a], n))
    rb.recorder.on_step(n, raw, processed, tok, ~fin)
    tok = record(tok, rb.out[:a], n, fin, rb.hit_eos[:a], rb.eos, rb.L, ctx.pad_id, ctx.stop)
    rb.chain.update(tok)
    if rb.streamer is not None:  # streaming needs the host: one read per step, by its nature
        rb.streamer(rb.steps, tok, fin)
    feed(rb, a, tok)


def feed(rb, a: int, tok: torch.Tensor) -> None:
    """The sampled tokens into column `col_t` of every running KV row (with mirrors, a mirror gets its
    row's token and idle rows a pad, so no row is ever fully masked), then the forward."""
    kv, rt, static = rb.kv, rb.rt, rb.rt.static_shapes
    r = rb.R if rb.mirror else a
    if rb.mirror:
        tok = rb.pads[:r].index_copy(0, rb.fed_rows(a), tok.repeat(2))
    rows = None
    if rb.share is not None and rb.share.active:  # eager only (shared.py): one host read, the forks' KV copies
        rows, where, forks = rb.share.plan(tok, rb.finished[:a], rt.device)
        copy_rows(kv.tensors(), forks, kv.lo, kv.col, rt.device)
    col = kv.col_t
    rb.tokens[:r].index_copy_(1, col, tok[:, None])
    rb.valid[:r].index_fill_(1, col, True)
    if rows is not None:  # the leaders alone; each follower takes its leader's logits
        mask = rt.mask4d(rb.valid[rows, kv.lo:kv.col + 1], 1, causal_tail=True)
        kv.mode, kv.rows = "rows", rows
        try:
            logits, _ = rt.decode_fn(tok[rows, None], rb.pos[rows, None], mask)
        finally:
            kv.mode, kv.rows = "decode", None
        rb.logits[:a] = logits[:, -1].index_select(0, where)
    else:
        window = rb.valid[:r] if static else rb.valid[:r, kv.lo:kv.col + 1]
        mask = rt.mask4d(window, 1, causal_tail=True)
        logits, _ = rt.decode_fn(tok[:, None], rb.pos[:r, None], mask)
        rb.logits[:r] = logits[:, -1]
    rb.pos[:r] += 1
    col += 1


def host_after(rb, a: int) -> None:
    """The host's counters of the step just run (outside any compiled graph)."""
    r = rb.R if rb.mirror else a
    rt = rb.rt
    if rb.share is not None and rb.share.fed is not None:  # shared histories fed only the leaders
        r, rb.share.fed = rb.share.fed, None
    rt.row_steps += r
    if rb.stepper.whole:  # the compiled step's forward counted nothing on the host
        rt.forward_passes += 1
        rt.tokens_processed += r
    rb.steps += 1
    rb.kv.col += 1
    rb.flag.push(rb.finished)


class Stepper:
    """Runs `step_core` eagerly, or compiled whole (one graph per bucket) with `compile`.

    A compiled step is used once the batch's chain has run one eager step (its tables exist, so the graph
    never builds them); a compiler failure is said once and the step runs eagerly from then on (the
    tokens are the same either way, `tests/test_step_graph.py` checks it)."""

    def __init__(self, rt, backend: str | None = None, enabled: bool = False):
        self.rt, self.backend = rt, backend or "inductor"
        self.whole = bool(enabled) and rt.whole_step_ok()
        self.failed: list = []
        self.seen: set = set()
        self.fn = None
        if self.whole:
            rt.decode_fn = rt._run  # the forward without host counters (host_after counts)
            self.fn = torch.compile(step_core, fullgraph=True, dynamic=False, backend=self.backend)

    def __call__(self, rb, a: int) -> None:
        if not self.whole or self.failed or not rb.chain_warm or rb.streamer is not None or rb.chain._stateful:
            step_core(rb, a)
            rb.chain_warm = True
            return
        first = (a, id(rb.chain)) not in self.seen
        t0 = time.perf_counter()
        try:
            self.fn(rb, a)
        except Exception as e:  # noqa: BLE001 - any compiler failure: say it once, run eager
            self.failed.append(e)
            log.warning("compile: torch.compile failed (%s: %s); running the step eagerly",
                        type(e).__name__, str(e).splitlines()[0][:200])
            step_core(rb, a)
            return
        if first:
            self.seen.add((a, id(rb.chain)))
            if self.rt.device.type == "cuda":
                torch.cuda.synchronize()
            self.rt.compile_s += time.perf_counter() - t0
