"""Finished rows, one component for every loop that emits tokens per row: what a row has generated, whether
it has finished and why (EOS, the length limit, a stop string, a user criterion, the time limit).

    record(...)         device-only bookkeeping of one token per row (`[B]`, rows whose `active` is False
                        emit nothing): the running batch's step (running.py / step.py), contrastive
                        search and speculative decoding (several tokens per round, one call each) use it
    finish_reason(...)  the host's verdict for a finished row, shared by every method's outputs
    RowTracker          the whole component over a fixed batch: `push` (one token per row per step),
                        `push_many` (speculative decoding's accepted drafts + the target's token), the
                        stop strings and the time limit every few steps, and `outputs`

Beam search ranks finished hypotheses instead (beam.py's `end_codes`), with the same reason codes and the
same `StopChecker` (`stopping.py`).
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from decodebench.decoding.engine.batch import AsyncFlag, BatchContext, Output


def record(tok, out, lengths, finished, hit_eos, eos, limit: int, pad_id: int, stop=None, active=None):
    """Write one token per row at its length (finished or inactive rows write `pad_id` to `out`'s spare
    last column), count it, and mark rows that end on it. Device only, no host read. Returns the tokens
    as written (`pad_id` for rows that emitted nothing)."""
    skip = finished if active is None else finished | ~active
    emits = ~skip
    tok = torch.where(skip, pad_id, tok)
    out.scatter_(1, torch.where(skip, out.shape[1] - 1, lengths)[:, None], tok[:, None])
    lengths += emits
    is_eos = torch.isin(tok, eos) & emits
    hit_eos |= is_eos
    finished |= is_eos | (lengths >= limit)
    if stop is not None:  # rows that ended on this token by EOS or the limit keep that reason
        finished |= stop.update_criteria(out, lengths, finished | skip)
    return tok


def finish_reason(n: int, eos: bool, limit: int, stop_at: Optional[int], stop_why: str, timed_out: bool):
    """(kept tokens, finish_reason) of a finished row with `n` tokens: a stop rule's cut wins, then EOS,
    the time limit (a row that neither ended nor reached the limit) and the length limit."""
    if stop_at is not None and stop_at <= n:
        return stop_at, stop_why
    if eos:
        return n, "eos"
    return n, ("time" if timed_out and n < limit else "length")


class RowTracker:
    """Per-row bookkeeping of a loop over a fixed batch (see the module docstring): the output buffer,
    lengths, EOS, stop rules, streaming, the all-finished flag read one step late (no sync) and the time
    limit."""

    def __init__(self, batch: int, spec, ctx: "BatchContext", t0: float, streamer=None):
        dev = ctx.runner.device
        self.spec, self.ctx, self.t0, self.streamer = spec, ctx, t0, streamer
        self.L = spec.max_new_tokens
        self.out = torch.full((batch, self.L + 1), ctx.pad_id, dtype=torch.long, device=dev)  # + a spare column
        self.finished = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.hit_eos = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=dev)
        self.eos = torch.tensor(ctx.eos or [-1], device=dev)
        self.flag = AsyncFlag(dev)
        self.deadline = t0 + spec.max_time if spec.max_time else None
        self.timed_out, self.steps, self.t_first = False, 0, t0
        if ctx.stop is not None:
            ctx.stop.reset(torch.arange(batch, device=dev), batch)

    def _record(self, tok: torch.Tensor, active=None) -> torch.Tensor:
        c = self.ctx
        return record(tok, self.out, self.lengths, self.finished, self.hit_eos, self.eos, self.L, c.pad_id,
                      c.stop, active)

    def push(self, step: int, tok: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Record this step's tokens (finished rows get the pad id); returns (tokens, stop the loop?)."""
        tok = self._record(tok)
        self.steps = step + 1
        if step == 0:
            self.t_first = self.ctx.first_token(self.t0)
        self.check_strings()
        if self.streamer is not None:
            self.streamer(step, tok, self.finished)
        self.flag.push(self.finished.all())
        if step + 1 == self.L or self.flag.ready_and_true():
            return tok, True
        return tok, self.time_up()

    def push_many(self, tokens: torch.Tensor, counts: torch.Tensor) -> bool:
        """Record up to m tokens per row (`tokens` `[B, m]`, the first `counts[b]` of row b: speculative
        decoding's accepted drafts and the target's token). A row that ends on one emits no more. Checks
        stop strings and the time limit (the caller reads the device each round anyway); returns True
        when every row has finished."""
        j = torch.arange(tokens.shape[1], device=tokens.device)
        for i in range(tokens.shape[1]):
            self._record(tokens[:, i], active=j[i] < counts)
        self.steps += 1
        self.check_strings(force=True)
        if self.time_up():
            return True
        return bool(self.finished.all())

    def check_strings(self, force: bool = False) -> None:
        """Stop strings on recent text every `stop.every` steps (a host read), or now with `force`."""
        stop = self.ctx.stop
        if stop is None or not stop.stops or not (force or self.steps % stop.every == 0):
            return
        hit = stop.strings_hit(self.out, self.lengths, self.finished)
        if hit is not None:
            self.finished |= hit

    def time_up(self) -> bool:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.timed_out = True
            return True
        return False

    def outputs(self, telemetry: Optional[dict]) -> list[Output]:
        """Per row: tokens up to EOS, a stop string's last token or the limit, and why it finished."""
        ctx = self.ctx
        ctx.decode_done(self.t_first, self.steps)
        out = self.out[:, : self.L]
        stop_at = ctx.stop.final_lengths(out, self.lengths) if ctx.stop is not None else None
        outs = []
        for i, (row, n, eos) in enumerate(zip(out.tolist(), self.lengths.tolist(), self.hit_eos.tolist())):
            cut = stop_at[i] if stop_at is not None else None
            n, reason = finish_reason(n, eos, self.L, cut, ctx.stop.reason(i) if cut is not None else "",
                                      self.timed_out)
            outs.append(Output(token_ids=row[:n], finish_reason=reason,
                               telemetry=None if telemetry is None else {k: v[i][:n] for k, v in telemetry.items()}))
        return outs
