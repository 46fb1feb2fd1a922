"""The running batch of one-token-per-step decoding: static buffers, one step, host work every k steps.

`slots` slots hold rows (request x sample); the first `n_running` of them run. `capacity` KV columns per
row, `L` tokens per row at most, `R` KV rows (the slots and, with guidance, their mirrors). Per slot, on the
device:

    tokens, valid [R, capacity]  ids and "is a real token" per KV column (see kvcache.py for the layout)
    out [slots, L + 1]           generated ids (column L is a spare that finished rows write their pad to)
    lengths [slots], pos [R]     tokens generated so far (= the row's step), next position id
    finished, hit_eos [slots]    empty slots count as finished
    logits [R, V]                the next-token logits

`step()` is forward-free work then one forward, with no host read: transforms -> sample -> record ->
EOS / length / criteria -> write the token's column -> forward. `host_work()` runs every k steps and is
the only place that reads the device: it harvests finished rows, refills their slots from the queue
(continuous batching), compacts the batch when there is nobody left to admit, checks stop strings and
the time limit. A row's tokens depend only on its own (seed, prompt, sample, step), so neither k, nor
the slot it runs in, nor its batch-mates change them.

Classifier-free guidance (`mirror=True`, when any request has a guidance scale): 2 x slots KV rows, row s + slots
holds row s's unconditional sequence (its negative prompt, then every token row s generates). Both run in
the one decode forward of 2 x slots rows; `cfg_combine` joins their logits before the chain, for guided rows
only. The batch then keeps its size (no compaction: a mirror must stay at s + slots); finished rows idle.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from decodebench.decoding.transforms.chain import LogitsChain
from decodebench.decoding.engine.kvcache import Runtime
from decodebench.decoding.params.table import SamplingParams
from decodebench.decoding.engine.recorder import make_recorder
from decodebench.decoding.engine.batch import (AsyncFlag, BatchContext, Output, Request, guided, request_keys,
                                          unconditional_ids)
from decodebench.decoding.transforms.cfg import cfg_combine
from decodebench.decoding.engine.row_tracker import finish_reason
from decodebench.decoding.engine.shared import SharedHistories, copy_rows
from decodebench.decoding.engine.step import Stepper, bucket_for, host_after
from decodebench.decoding.sampling import row_word_table

_IDLE = SamplingParams()  # the settings an empty slot carries (its tokens are never read)


class RunningBatch:
    def __init__(self, ctx: BatchContext, spec, slots: int, capacity: int, deadline: Optional[float] = None,
                 mirror: bool = False):
        rt: Runtime = ctx.runner
        self.ctx, self.spec, self.rt, dev = ctx, spec, rt, rt.device
        self.slots, self.capacity, self.L = slots, capacity, spec.max_new_tokens  # L: tokens per row at most
        self.mirror, self.R = mirror, 2 * slots if mirror else slots  # R: KV rows (slots and their mirrors)
        self.kv = rt.allocate(self.R, capacity)
        self.kv.col = 0
        self.tokens = torch.full((self.R, capacity), ctx.pad_id, dtype=torch.long, device=dev)
        self.valid = torch.zeros((self.R, capacity), dtype=torch.bool, device=dev)
        self.gen_start = torch.zeros(slots, dtype=torch.long, device=dev)  # column of the first generated token
        self.out = torch.full((slots, self.L + 1), ctx.pad_id, dtype=torch.long, device=dev)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=dev)
        self.pos = torch.zeros(self.R, dtype=torch.long, device=dev)
        self.finished = torch.ones(slots, dtype=torch.bool, device=dev)
        self.hit_eos = torch.zeros(slots, dtype=torch.bool, device=dev)
        self.keys = torch.zeros(slots, dtype=torch.long, device=dev)
        # each row's noise words for every step it can take (`row_word_table`): one gather a step
        self.words = torch.zeros((slots, self.L + 1, 2), dtype=torch.int32, device=dev)
        self.logits = torch.zeros((self.R, ctx.vocab_size), dtype=torch.float32, device=dev)
        self.scale = torch.ones(slots, dtype=torch.float64, device=dev)  # guidance scale per slot
        self.guided = torch.zeros(slots, dtype=torch.bool, device=dev)
        self.neg_len = [0] * slots  # unconditional prompt length per slot (host)
        self._fed: tuple = (-1, None)  # (a, fed_rows(a)): one index tensor per batch width
        self.eos = torch.tensor(ctx.eos or [-1], device=dev)
        self.recorder = make_recorder(ctx.record, slots, self.L, dev)
        self.owner: list[Optional[int]] = [None] * slots  # request index per slot (host)
        self.start: list[int] = [0] * self.R  # first real column per KV row (host)
        self.reqs: list[Optional[Request]] = [None] * slots
        self.last_params: list[Optional[SamplingParams]] = [None] * slots  # per slot, its last request's
        self.n_running = 0
        self.chain: Optional[LogitsChain] = None
        self.chain_names: set[str] = set()
        self.chain_owner: list[Optional[int]] = []  # the request of each chain row when it was built
        self.steps = 0  # decode steps run (the chain's incremental tables key on it)
        self.flag = AsyncFlag(dev, (slots,))
        self.deadline, self.timed_out = deadline, False
        self.streamer = None  # streaming.Streamer over this static batch's rows (slot i = row i)
        self.trusted_from = [0] * slots  # host flags about a slot count from this step on
        self.pads = torch.full((self.R,), ctx.pad_id, dtype=torch.long, device=dev)  # idle KV rows' token
        self.kv.col_t.fill_(0)
        self.stepper = Stepper(rt, ctx.compile_backend, enabled=rt.static_shapes)
        self.chain_warm = False  # the chain has run one eager step since it was built
        # rows with one history share one forward (shared.py): eager, without mirrors, where the context asks
        self.share = SharedHistories(slots) if ctx.share_histories and not mirror and not rt.static_shapes else None
        if ctx.stop is not None:
            ctx.stop.reset(torch.arange(slots, device=dev), slots)  # the criteria's state exists before any step

    # ------------------------------------------------------------------------------------ the step
    def step(self) -> None:
        """One decode step over the running slots (step.py): no host read, compiled whole with compile."""
        self.stepper(self, self.n_running)
        host_after(self, self.n_running)

    def guided_logits(self, n: int) -> torch.Tensor:
        """The chain's input for slots `[0, n)`: classifier-free guidance's combination for guided rows (the
        first transform, as transformers orders it), the model's logits for the others."""
        raw = self.logits[:n]
        if not self.mirror:
            return raw
        mirrors = self.logits[self.slots:self.slots + n]
        return torch.where(self.guided[:n, None], cfg_combine(raw, mirrors, self.scale[:n]), raw)

    def fed_rows(self, n: int) -> torch.Tensor:
        """KV rows of the running slots `[0, n)` and then of their mirrors `[slots, slots + n)`."""
        if self._fed[0] != n:
            ar = torch.arange(n, device=self.rt.device)
            self._fed = (n, torch.cat([ar, ar + self.slots]))
        return self._fed[1]

    # ------------------------------------------------------------------------------- host work
    def finished_host(self) -> list[bool]:
        """Which running slots have finished, as of the last step whose flags have reached the host
        (on CUDA the step before the last, so the host never waits). A flag copied before a slot got its
        row, or before the batch was compacted, says nothing about that slot."""
        v = self.flag.read()
        if v is None:
            return [False] * self.n_running
        as_of = self.steps - (1 if self.flag.cuda else 0)
        return [f and as_of >= t for f, t in zip(v[: self.n_running].tolist(), self.trusted_from)]

    def check_strings(self) -> set[int]:
        """Stop strings on decoded text (a host read; runs with the host work). Returns the slots that hit
        one: the host knows them now, so they leave at this host work, not the next."""
        stop = self.ctx.stop
        if stop is None or not stop.stops or not self.n_running:
            return set()
        n = self.n_running
        hit = stop.strings_hit(self.out[:n], self.lengths[:n], self.finished[:n])
        if hit is None:
            return set()
        self.finished[:n] |= hit
        return {s for s, h in enumerate(hit.tolist()) if h}

    def time_up(self) -> bool:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.timed_out = True
            return True
        return False

    def harvest(self, slots: list[int]) -> list[tuple[int, Output]]:
        """(request index, output) for finished `slots`, which become free. One host read for all."""
        if not slots:
            return []
        if self.share is not None:  # a leaving leader hands its KV to the next member of its group
            copy_rows(self.kv.tensors(), self.share.release(slots), self.kv.lo, self.kv.col, self.rt.device)
        ctx, idx = self.ctx, torch.tensor(slots, device=self.rt.device)
        outs_t, lens, eos = self.out[idx, : self.L].tolist(), self.lengths[idx].tolist(), self.hit_eos[idx].tolist()
        stop_at = ctx.stop.final_lengths(self.out[idx, : self.L], self.lengths[idx], rows=idx) \
            if ctx.stop is not None else None
        tele = self.recorder.rows(idx)
        res = []
        for j, s in enumerate(slots):
            cut = stop_at[j] if stop_at is not None else None
            n, reason = finish_reason(lens[j], eos[j], self.L, cut, ctx.stop.reason(j) if cut is not None else "",
                                      self.timed_out)
            t = None if tele is None else {k: v[j][:n] for k, v in tele.items()}
            res.append((self.owner[s], Output(token_ids=outs_t[j][:n], finish_reason=reason, telemetry=t)))
            self.last_params[s] = self.reqs[s].params
            self.owner[s], self.reqs[s] = None, None
        return res

    def admit(self, items: list[tuple[int, Request]]) -> None:
        """Requests into free slots (the lowest first); prefilled together, each distinct prompt once."""
        free = [s for s in range(self.slots) if self.owner[s] is None][: len(items)]
        prompts = [r.prompt_ids for _, r in items]
        kv_rows = free
        if self.mirror:  # each row's unconditional sequence is prefilled with it, into its mirror slot
            negs = [unconditional_ids(r) for _, r in items]
            prompts, kv_rows = prompts + negs, free + [s + self.slots for s in free]
        width = max(len(p) for p in prompts)
        self.make_room(width)
        kv, dev = self.kv, self.rt.device
        slots = torch.tensor(free, dtype=torch.long, device=dev)
        rows = torch.tensor(kv_rows, dtype=torch.long, device=dev)
        self.valid[rows] = False
        logits, _, lens = self.rt.prefill(rows, prompts, self.ctx.pad_id, self.valid, self.tokens)
        self.logits[rows] = logits
        self.pos[rows] = lens
        self.gen_start[slots] = kv.col
        self.lengths[slots] = 0
        self.finished[slots] = False
        self.hit_eos[slots] = False
        self.keys[slots] = request_keys([r for _, r in items], dev)
        self.words[slots] = row_word_table(self.keys[slots], self.L + 1)
        self.recorder.reset(slots)
        if self.ctx.stop is not None:
            self.ctx.stop.reset(slots, self.slots)
        for s, (i, r) in zip(free, items):
            self.owner[s], self.reqs[s], self.start[s] = i, r, kv.col - len(r.prompt_ids)
            self.trusted_from[s] = self.steps + 1
        if self.mirror:
            for s, neg in zip(free, negs):
                self.start[s + self.slots], self.neg_len[s] = kv.col - len(neg), len(neg)
            self.scale[slots] = torch.tensor([float(r.params.guidance_scale) if guided(r) else 1.0 for _, r in items],
                                             dtype=torch.float64, device=dev)
            self.guided[slots] = torch.tensor([guided(r) for _, r in items], device=dev)
        if self.share is not None:
            self.share.admitted(free, [r.prompt_ids for _, r in items])
        self.n_running = self.width(max(self.n_running, max(free) + 1))
        self.rebuild_chain(joined=slots)

    def compact(self) -> None:
        """Running slots with a request move to the front; the batch shrinks to them."""
        live = [s for s in range(self.n_running) if self.owner[s] is not None]
        if len(live) == self.n_running or (self.mirror and live) or self.width(len(live)) == self.n_running:
            return  # mirrors keep their place (finished rows idle until the end); a bucket keeps its size
        idx = torch.tensor(live, dtype=torch.long, device=self.rt.device)
        n = len(live)
        self.kv.select_slots(idx, n)
        for t in (self.tokens, self.valid, self.gen_start, self.out, self.lengths, self.pos, self.finished,
                  self.hit_eos, self.keys, self.words, self.logits):
            t[:n] = t[idx]
        self.recorder.select(idx, n)
        if self.ctx.stop is not None:
            self.ctx.stop.select(idx, n)
        if self.share is not None:
            self.share.compacted(live, self.slots)
        self.owner = [self.owner[s] for s in live] + [None] * (self.slots - n)
        self.reqs = [self.reqs[s] for s in live] + [None] * (self.slots - n)
        self.last_params = [self.last_params[s] for s in live] + [None] * (self.slots - n)
        self.start = [self.start[s] for s in live] + [0] * (self.R - n)
        self.finished[n:] = True
        self.trusted_from = [self.steps + 1] * self.slots
        self.n_running = self.width(n)
        self.rebuild_chain()

    def width(self, n: int) -> int:
        """The running batch for `n` slots: `n`, or with compiled steps the bucket holding it (a graph each)."""
        return bucket_for(n, self.slots) if self.rt.static_shapes and n else n

    def rebuild_chain(self, joined: Optional[torch.Tensor] = None) -> None:
        """The chain of the running rows, after rows left or joined; per-row transform state (mirostat's
        mu, grammar matchers, ...) follows each row that stays. Rows that join with the settings their
        slot's chain row already holds (an empty slot keeps its last request's) reset that row's tables
        in place: no rebuild, and a compiled step keeps its graph."""
        ctx = self.ctx
        rows = [r.params if r is not None else self.idle_params(s) for s, r in enumerate(self.reqs[: self.n_running])]
        old = self.chain
        if joined is not None and old is not None and not old._stateful and old.rows == rows:
            old.reset_rows(joined)
            self.chain_owner = list(self.owner[: self.n_running])
        elif self.n_running:
            old, old_rows = self.chain, self.chain_owner
            self.chain = LogitsChain.from_rows(rows, vocab_size=ctx.vocab_size, eos_token_id=ctx.eos,
                                               device=self.rt.device, tokenizer=ctx.tokenizer)
            self.chain_owner = list(self.owner[: self.n_running])
            if old is not None:
                where = {o: i for i, o in enumerate(old_rows) if o is not None}
                self.chain.carry_state(old, [where.get(o) if o is not None else None for o in self.chain_owner])
            self.chain.counts_kept = True  # updated every step, reset on joins: no step numbers compared
            self.chain_names.update(self.chain.names)
            self.chain_warm = False
        self.set_window()

    def idle_params(self, s: int) -> SamplingParams:
        """The settings an empty slot's chain row carries (its tokens are never read): its last request's,
        so a request with the same settings joins without a rebuild; with stateful transforms, neutral."""
        last = self.last_params[s]
        return last if last is not None and self.chain is not None and not self.chain._stateful else _IDLE

    def live_rows(self) -> list[tuple[int, int]]:
        """(KV row, its prompt length) of every running row, mirrors included."""
        out = []
        for s in range(self.n_running):
            if self.owner[s] is not None:
                out.append((s, len(self.reqs[s].prompt_ids)))
                if self.mirror:
                    out.append((s + self.slots, self.neg_len[s]))
        return out

    def set_window(self) -> None:
        live = [self.start[k] for k, _ in self.live_rows()]
        self.kv.lo = min(live) if live else self.kv.col

    def make_room(self, width: int) -> None:
        """Ensure `width` columns before `col` and one free column after it: move every column by one
        shift when not (the rows' layout relative to `col` is unchanged)."""
        kv = self.kv
        # a row still running needs at most its prompt and L columns; a finished row waiting for the
        # host work writes padding past that, which may be dropped
        spans = [min(kv.col - self.start[k], n + self.L) for k, n in self.live_rows()]
        if kv.col >= width and kv.col + 1 <= self.capacity and (kv.col + 1 < self.capacity or not spans):
            return
        new_col = max([width] + spans)
        d = kv.col - new_col
        if d == 0:
            return
        kv.shift(d)
        from decodebench.decoding.engine.kvcache import _shift

        _shift(self.tokens, d, 1)
        _shift(self.valid, d, 1)
        if d > 0:
            self.valid[:, self.capacity - d:] = False
        else:
            self.valid[:, : -d] = False
        self.gen_start -= d
        self.start = [max(0, s - d) for s in self.start]
        kv.col = new_col
        kv.col_t.fill_(new_col)
        self.set_window()

    def room_for_step(self) -> None:
        if self.kv.col + 1 > self.capacity:
            self.make_room(0)


@torch.inference_mode()
def run_sampling(reqs: list[Request], spec, ctx: BatchContext, order: list[int],
                 deliver: Callable[[list[tuple[int, Output]]], None], capacity: int,
                 streamer_factory: Optional[Callable] = None) -> None:
    """Every request in `order` through one running batch of `ctx.batch_size` slots.

    Continuous (`ctx.continuous`): a finished row's slot goes to the next waiting request at the next
    host work. Static: the next `batch_size` requests start when the whole batch is done (with a
    streamer, `streamer_factory(batch_requests)` streams each batch). `deliver` gets (request index,
    output) pairs as rows finish.
    """
    from decodebench.decoding.engine.streaming import as_streamer

    slots = min(ctx.batch_size, len(order))
    stats = ctx.stats
    queue = list(order)
    k = max(1, int(ctx.sync_every))
    rb: Optional[RunningBatch] = None
    batch_out: dict[int, Output] = {}
    while queue or (rb is not None and rb.n_running):
        if rb is None or (not ctx.continuous and not rb.n_running):
            t0 = time.perf_counter()
            deadline = t0 + spec.max_time if spec.max_time else None
            if rb is None:
                rb = RunningBatch(ctx, spec, slots, capacity, deadline, mirror=any(guided(reqs[i]) for i in order))
            else:
                rb.deadline, rb.timed_out = deadline, False
            take, queue = queue[:slots], queue[slots:]
            if streamer_factory is not None:
                rb.streamer, batch_out = as_streamer(streamer_factory([reqs[i] for i in take])), {}
            rb.admit([(i, reqs[i]) for i in take])
            t_first = ctx.first_token(t0)
            steps0 = rb.steps
        for _ in range(k):
            rb.room_for_step()
            rb.step()
        if rb.time_up():
            rb.finished[: rb.n_running] = True
            rb.flag.push(rb.finished)  # the host sees it now (on CUDA: one push later)
            ctx.sync()
        hit = rb.check_strings()
        done = [s for s, f in enumerate(rb.finished_host()) if (f or s in hit) and rb.owner[s] is not None]
        if done:
            pairs = rb.harvest(done)
            if rb.streamer is not None:
                batch_out.update({s: o for s, (_, o) in zip(done, pairs)})
            deliver(pairs)
        if ctx.continuous and queue:
            free = sum(o is None for o in rb.owner)
            if free:
                take, queue = queue[:free], queue[free:]
                rb.admit([(i, reqs[i]) for i in take])
        if rb.streamer is None and not (ctx.continuous and queue):
            rb.compact()  # nobody to admit: the batch shrinks to the rows still running
        elif rb.streamer is not None and all(o is None for o in rb.owner[: rb.n_running]):
            rb.streamer.close([batch_out[s] for s in range(rb.n_running)])
            rb.n_running = 0
        if not rb.n_running:
            ctx.decode_done(t_first, rb.steps - steps0)
    if rb is not None and rb.chain is not None:
        rb.chain.raise_if_nan()
        from decodebench.decoding.transforms.registry import resolve_order

        stats.chain = [n for n in resolve_order(reqs[order[0]].params.order) if n in rb.chain_names]
        stats.kv_bytes = max(stats.kv_bytes, rb.kv.nbytes())
        stats.batch_size = max(stats.batch_size, slots)
