"""Per-row bookkeeping of contrastive search's loop (one token per row per step over a fixed batch)."""

from __future__ import annotations

import time
from typing import Optional

import torch

from decodebench.decoding.runtime import AsyncFlag, BatchContext, Output


class RowTracker:
    """Per-row bookkeeping of a one-token-per-step loop: the output buffer, lengths, EOS, stop rules,
    streaming, the all-finished flag read one step late (no sync) and the time limit."""

    def __init__(self, batch: int, spec, ctx: "BatchContext", t0: float, streamer=None):
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


