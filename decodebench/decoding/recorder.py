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

    def finalize(self):
        return None


class Recorder:
    def __init__(self, fields, batch: int, steps: int, device):
        self.fields = fields
        self.buf = {f: torch.zeros(batch, steps, dtype=torch.float32, device=device) for f in fields}

    def on_step(self, step, raw, processed, tokens, active):
        idx = tokens.view(-1, 1)
        raw_lp = torch.log_softmax(raw, dim=-1)
        lp = torch.log_softmax(processed, dim=-1)
        kept = torch.isfinite(processed)
        b = self.buf
        if "entropy" in b:
            p = lp.exp()
            b["entropy"][:, step] = -(p * lp.masked_fill(~kept, 0.0)).sum(-1)
        if "kept" in b:
            b["kept"][:, step] = kept.sum(-1).float()
        if "removed_mass" in b:
            b["removed_mass"][:, step] = raw_lp.exp().masked_fill(kept, 0.0).sum(-1)
        if "rank" in b:
            b["rank"][:, step] = (raw > raw.gather(-1, idx)).sum(-1).float()
        if "logprob_raw" in b:
            b["logprob_raw"][:, step] = raw_lp.gather(-1, idx).squeeze(-1)
        if "logprob" in b:
            b["logprob"][:, step] = lp.gather(-1, idx).squeeze(-1)

    def finalize(self) -> dict[str, list[list[float]]]:
        out = {}
        for f, t in self.buf.items():
            vals = t.cpu().tolist()
            out[f] = [[int(v) for v in row] for row in vals] if f in ("kept", "rank") else vals
        return out


def make_recorder(fields, batch: int, steps: int, device):
    fields = check_fields(fields)
    return Recorder(fields, batch, steps, device) if fields else NullRecorder()
