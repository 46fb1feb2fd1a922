"""Stop strings, matched on decoded text across token boundaries.

The loop asks every `every` steps (a host sync each time, so not every step) whether an unfinished row's
recent text contains a stop string, and marks such rows finished. Because a row's tokens never depend on
its batch-mates or on when it was marked, cutting afterwards at the first token whose text completes the
stop string (`final_lengths`) gives exactly what stopping at that token would have given. As in
transformers' StopStringCriteria, the output keeps the token that completes the stop string.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class StopChecker:
    def __init__(self, tokenizer, stops: Sequence[str], every: int = 4):
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        self.tok = tokenizer
        self.stops = tuple(stops)
        self.every = every
        self.window = max(len(s) for s in stops) + every + 1  # tokens carry at least one character

    def _hit(self, ids: list[int]) -> bool:
        text = self.tok.decode(ids, skip_special_tokens=False)
        return any(s in text for s in self.stops)

    def update(self, out_tokens: torch.Tensor, lengths: torch.Tensor, step: int,
               finished: torch.Tensor) -> torch.Tensor:
        hit = torch.zeros_like(finished)
        if (step + 1) % self.every:
            return hit
        lens = lengths.tolist()
        fin = finished.tolist()
        for i, (n, f) in enumerate(zip(lens, fin)):
            if not f and n and self._hit(out_tokens[i, max(0, n - self.window): n].tolist()):
                hit[i] = True
        return hit

    def final_lengths(self, out_tokens: torch.Tensor, lengths: torch.Tensor) -> list[Optional[int]]:
        """Per row, the number of tokens up to and including the one that completes a stop string."""
        res: list[Optional[int]] = []
        for row, n in zip(out_tokens.tolist(), lengths.tolist()):
            ids = row[:n]
            if not ids or not self._hit(ids):
                res.append(None)
                continue
            lo, hi = 1, n  # smallest prefix length whose text contains a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if self._hit(ids[:mid]):
                    hi = mid
                else:
                    lo = mid + 1
            res.append(lo)
        return res
