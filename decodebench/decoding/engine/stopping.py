"""Stopping rules besides EOS and the length limit: stop strings and user-registered criteria, by name.

Stop strings are matched on decoded text across token boundaries. The sampling loop asks every `every`
steps (a host sync each time, so not every step) whether an unfinished row's recent text contains one,
and marks such rows finished. Because a row's tokens never depend on its batch-mates or on when it was
marked, cutting afterwards at the first token whose text completes the stop string (`final_lengths`)
gives exactly what stopping at that token would have given. As in transformers' StopStringCriteria, the
output keeps the token that completes the stop string.

User criteria are registered by name and chosen from config (`strategy.stopping=[name, ...]`)::

    from decodebench.decoding.engine.stopping import register_stopping

    @register_stopping("three_sentences")
    def three_sentences(tokenizer):                    # called once per batch: precompute here
        period = tokenizer.convert_tokens_to_ids(".")
        def criterion(tokens, lengths):                # [N, T] generated ids (right-padded), [N]
            return (tokens == period).sum(-1) >= 3     # [N] bool: stop after this row's last token
        return criterion

A criterion is a batched tensor function, so it runs every step with no sync; the row's
`finish_reason` is the criterion's name. Search methods (beam, ...) call `check` on every candidate
each step, so a hypothesis ends exactly at the token that triggers a rule, as in transformers' beam
search with stopping criteria.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from decodebench.registry import Registry

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STOPPING: Registry = Registry("stopping criterion")

# finish_reason codes shared by the search methods: index into `reasons` of a checker (or BASE_REASONS)
EOS, LENGTH, TIME, STOP = 0, 1, 2, 3
BASE_REASONS = ("eos", "length", "time", "stop")
_NEVER = torch.iinfo(torch.long).max


def register_stopping(name: str):
    """Decorator: register `factory(tokenizer) -> criterion` under `name` (duplicate names are an error)."""
    if name in BASE_REASONS:
        raise ValueError(f"stopping criterion name {name!r} is reserved (a built-in finish_reason)")
    return STOPPING.register(name)


@register_stopping("newline")
def newline(tokenizer) -> Criterion:
    """Stop after the first generated token whose text contains a line break (one-line answers)."""
    table = _newline_table(tokenizer)
    on_device = {table.device: table}  # the table per device, copied once, not per check

    def criterion(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = on_device.get(tokens.device)
        if t is None:
            t = on_device[tokens.device] = table.to(tokens.device)
        ids = tokens.clamp(0, t.numel() - 1)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        return (t[ids] & (pos < lengths[:, None])).any(-1)

    return criterion


_NEWLINE_CACHE: dict[int, torch.Tensor] = {}


def _newline_table(tokenizer) -> torch.Tensor:
    """`[V]` bool: tokens whose text has a newline. Decodes the vocabulary once per tokenizer (~1 s)."""
    key = id(tokenizer)
    if key not in _NEWLINE_CACHE:
        n = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
        _NEWLINE_CACHE[key] = torch.tensor(["\n" in s for s in texts], dtype=torch.bool)
    return _NEWLINE_CACHE[key]


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate criterion names from config (unknown name: one line with "did you mean")."""
    for n in names:
        STOPPING.get(n)
    return tuple(names)


class StopChecker:
    """Stop strings plus user criteria for one batch. `reasons[code]` names each finish_reason code."""

    def __init__(self, tokenizer, stops: Sequence[str] = (), criteria: Sequence[str] = (), every: int = 4,
                 per_step: int = 1):
        """`every`: steps between stop-string checks (the engine's `sync_every`); `per_step`: tokens a row
        may gain per step (speculative decoding: drafts + 1). The window of recent tokens each check
        decodes covers every token generated since the last check plus the longest stop string."""
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        self.tok = tokenizer
        self.stops = tuple(stops)
        self.every = every
        # tokens carry >= 1 char: a stop string completed since the last check ends inside the window
        self.window = (max(len(s) for s in stops) + every * per_step + 1) if stops else 0
        self.names = check_names(criteria)
        self.criteria = [STOPPING.get(n)(tokenizer) for n in self.names]
        self.reasons = BASE_REASONS + self.names
        self._crit_len: Optional[torch.Tensor] = None  # [B] first length at which a criterion fired
        self._crit_code: Optional[torch.Tensor] = None
        self.row_reasons: list[str] = []

    @classmethod
    def for_spec(cls, tokenizer, spec, every: int = 4, per_step: int = 1) -> Optional["StopChecker"]:
        """The checker a strategy spec asks for, or None when it sets no stop strings or criteria;
        `every`: the host-work interval (`sync_every`) its stop-string window must cover."""
        crit = tuple(getattr(spec, "stopping", ()) or ())
        return cls(tokenizer, spec.stop, crit, every=every, per_step=per_step) if (spec.stop or crit) else None

    def _hit(self, ids: list[int]) -> bool:
        text = self.tok.decode(ids, skip_special_tokens=False)
        return any(s in text for s in self.stops)

    # ------------------------------------------------------------------ the sampling loop's interface
    def update(self, out_tokens: torch.Tensor, lengths: torch.Tensor, step: int,
               finished: torch.Tensor) -> torch.Tensor:
        """Rows that hit a rule by this step. Criteria every step (no sync); stop strings every `every`."""
        hit = self.update_criteria(out_tokens[:, : step + 1], lengths, finished)
        if self.stops and (step + 1) % self.every == 0:
            s = self.strings_hit(out_tokens, lengths, finished)
            if s is not None:
                hit |= s
        return hit

    def update_criteria(self, out_tokens: torch.Tensor, lengths: torch.Tensor,
                        finished: torch.Tensor) -> torch.Tensor:
        """Rows whose criteria fire now (device only, no sync); remembers the first length that fired."""
        hit = torch.zeros_like(finished)
        if not self.criteria:
            return hit
        if self._crit_len is None or self._crit_len.shape[0] < lengths.shape[0]:
            self._crit_len = torch.full_like(lengths, _NEVER)
            self._crit_code = torch.full_like(lengths, -1)
        b = lengths.shape[0]
        crit_len, crit_code = self._crit_len[:b], self._crit_code[:b]
        for j, fn in enumerate(self.criteria):
            h = fn(out_tokens, lengths).to(torch.bool) & ~finished
            first = h & (crit_len == _NEVER)
            crit_len.copy_(torch.where(first, lengths, crit_len))
            crit_code.copy_(torch.where(first, len(BASE_REASONS) + j, crit_code))
            hit |= h
        return hit

    def strings_hit(self, out_tokens: torch.Tensor, lengths: torch.Tensor,
                    finished: torch.Tensor) -> Optional[torch.Tensor]:
        """Unfinished rows whose recent text holds a stop string (a host read), or None without strings."""
        if not self.stops:
            return None
        hit = torch.zeros_like(finished)
        for i, (n, f) in enumerate(zip(lengths.tolist(), finished.tolist())):
            if not f and n and self._hit(out_tokens[i, max(0, n - self.window): n].tolist()):
                hit[i] = True
        return hit

    def reset(self, rows: torch.Tensor, batch: int) -> None:
        """Rows `rows` start a new request (continuous batching): no criterion has fired for them."""
        if self._crit_len is None:
            if not self.criteria:
                return
            self._crit_len = torch.full((batch,), _NEVER, dtype=torch.long, device=rows.device)
            self._crit_code = torch.full((batch,), -1, dtype=torch.long, device=rows.device)
        if self._crit_len.shape[0] < batch:
            grow = batch - self._crit_len.shape[0]
            self._crit_len = torch.cat([self._crit_len, self._crit_len.new_full((grow,), _NEVER)])
            self._crit_code = torch.cat([self._crit_code, self._crit_code.new_full((grow,), -1)])
        self._crit_len[rows] = _NEVER
        self._crit_code[rows] = -1

    def select(self, index: torch.Tensor, n: int) -> None:
        """Rows `index` become rows `0..n-1` (the running batch was compacted)."""
        if self._crit_len is not None:
            self._crit_len[:n] = self._crit_len[index]
            self._crit_code[:n] = self._crit_code[index]

    def final_lengths(self, out_tokens: torch.Tensor, lengths: torch.Tensor,
                      rows: Optional[torch.Tensor] = None) -> list[Optional[int]]:
        """Per row, the tokens up to and including the one that triggers a rule (None: no rule fired).

        `rows`: which rows of the criteria state `out_tokens` holds (default: the first ones, in order).
        Also sets `row_reasons[i]` ("stop" or the criterion's name) for rows with a length.
        """
        res: list[Optional[int]] = []
        n = len(lengths)
        if self._crit_len is not None:
            cl = self._crit_len[rows] if rows is not None else self._crit_len[:n]
            cc = self._crit_code[rows] if rows is not None else self._crit_code[:n]
            crit_len, crit_code = cl.tolist(), cc.tolist()
        else:
            crit_len, crit_code = [_NEVER] * n, [-1] * n
        self.row_reasons = []
        for row, n, cl, cc in zip(out_tokens.tolist(), lengths.tolist(), crit_len, crit_code):
            cut = self._string_cut(row[:n]) if self.stops else None
            why = "stop"
            if cc >= 0 and (cut is None or cl < cut):
                cut, why = cl, self.reasons[cc]
            res.append(cut)
            self.row_reasons.append(why if cut is not None else "")
        return res

    def reason(self, i: int) -> str:
        """finish_reason of row i after `final_lengths` ("stop" for a stop string, else a criterion name)."""
        return self.row_reasons[i] if i < len(self.row_reasons) and self.row_reasons[i] else "stop"

    def first_stop(self, ids: list[int]) -> Optional[int]:
        """The length of the shortest prefix of `ids` whose text holds a stop string, or None (for methods
        that cut a finished sequence, such as power sampling)."""
        return self._string_cut(list(ids))

    def _string_cut(self, ids: list[int]) -> Optional[int]:
        if not ids or not self._hit(ids):
            return None
        lo, hi = 1, len(ids)  # smallest prefix length whose text contains a stop string
        while lo < hi:
            mid = (lo + hi) // 2
            if self._hit(ids[:mid]):
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -------------------------------------------------------------- the search methods' interface
    def check(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """`[N]` int64 finish_reason code per candidate whose LAST token triggers a rule, else -1.

        `tokens` `[N, >= length]` generated ids, all `length` long. Candidates that triggered a rule
        earlier never reach here (they ended then), so "contains a stop string" means "just completed".
        Stop strings cost one sync and N short decodes per call; criteria cost no sync.
        """
        n = tokens.shape[0]
        code = torch.full((n,), -1, dtype=torch.long, device=tokens.device)
        toks = tokens[:, :length]
        lens = torch.full((n,), length, dtype=torch.long, device=tokens.device)
        for j in reversed(range(len(self.criteria))):  # the first-listed criterion wins a tie
            h = self.criteria[j](toks, lens).to(torch.bool)
            code = torch.where(h, len(BASE_REASONS) + j, code)
        if self.stops:
            recent = toks[:, max(0, length - self.window):].tolist()
            hits = torch.tensor([self._hit(r) for r in recent], dtype=torch.bool, device=tokens.device)
            code = torch.where(hits, STOP, code)
        return code
