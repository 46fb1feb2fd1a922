"""Optional per-step telemetry through one recorder, so the hot loop has no `if output_scores:` branches.

Fields, per generated token (`record=[...]` or `record=[all]`):
  entropy        entropy (nats) of the final, processed distribution
  kept           number of tokens left with non-zero probability after the transforms
  removed_mass   probability mass (under the raw distribution) of the tokens the transforms removed
  rank           the chosen token's rank under the raw distribution (0 = most likely)
  logprob_raw    the chosen token's log-probability under the raw distribution
  logprob        the chosen token's log-probability under the processed distribution

Values stay on the device in [B, max_new_tokens] buffers until `finalize()`; with nothing recorded the
recorder is a no-op object and costs nothing.
"""

from __future__ import annotations

import torch

FIELDS = ("entropy", "kept", "removed_mass", "rank", "logprob_raw", "logprob")


def check_fields(names) -> tuple[str, ...]:
    names = tuple(names)
    if "all" in names:
        return FIELDS
    bad = [n for n in names if n not in FIELDS]
    if bad:
        raise ValueError(f"record: unknown telemetry field {bad[0]!r}; choose from {', '.join(FIELDS)} or all")
    return names


class NullRecorder:
    def on_step(self, step, raw, processed, tokens, active):
        pass

    def rows(self, index):
        return None

    def reset(self, index):
        pass

    def select(self, index, n):
        pass

    def finalize(self):
        return None


class Recorder:
    """`[B, steps]` float32 buffers per field; `step` is an int (every row at the same step) or a `[B]`
    tensor of per-row steps (continuous batching)."""

    def __init__(self, fields, batch: int, steps: int, device):
        self.fields = fields
        self.steps = steps
        # one spare column: inactive rows write there, so a row's real columns are never overwritten
        self.buf = {f: torch.zeros(batch, steps + 1, dtype=torch.float32, device=device) for f in fields}

    def on_step(self, step, raw, processed, tokens, active):
        idx = tokens.view(-1, 1)
        raw_lp = torch.log_softmax(raw, dim=-1)
        lp = torch.log_softmax(processed, dim=-1)
        kept = torch.isfinite(processed)
        vals = {}
        if "entropy" in self.buf:
            p = lp.exp()
            vals["entropy"] = -(p * lp.masked_fill(~kept, 0.0)).sum(-1)
        if "kept" in self.buf:
            vals["kept"] = kept.sum(-1).float()
        if "removed_mass" in self.buf:
            vals["removed_mass"] = raw_lp.exp().masked_fill(kept, 0.0).sum(-1)
        if "rank" in self.buf:
            vals["rank"] = (raw > raw.gather(-1, idx)).sum(-1).float()
        if "logprob_raw" in self.buf:
            vals["logprob_raw"] = raw_lp.gather(-1, idx).squeeze(-1)
        if "logprob" in self.buf:
            vals["logprob"] = lp.gather(-1, idx).squeeze(-1)
        b = raw.shape[0]
        if isinstance(step, torch.Tensor):
            col = torch.where(active, step.clamp(max=self.steps), self.steps)[:, None]
            for f, v in vals.items():
                self.buf[f][:b].scatter_(1, col, v[:, None])
        else:
            for f, v in vals.items():
                self.buf[f][:b, step] = v

    def _lists(self, t: torch.Tensor, f: str) -> list:
        vals = t[:, : self.steps].cpu().tolist()
        return [[int(v) for v in row] for row in vals] if f in ("kept", "rank") else vals

    def rows(self, index) -> dict[str, list[list[float]]]:
        return {f: self._lists(t[index], f) for f, t in self.buf.items()}

    def reset(self, index) -> None:
        for t in self.buf.values():
            t[index] = 0.0

    def select(self, index, n: int) -> None:
        for t in self.buf.values():
            t[:n] = t[index]

    def finalize(self) -> dict[str, list[list[float]]]:
        return {f: self._lists(t, f) for f, t in self.buf.items()}


def make_recorder(fields, batch: int, steps: int, device):
    fields = check_fields(fields)
    return Recorder(fields, batch, steps, device) if fields else NullRecorder()
