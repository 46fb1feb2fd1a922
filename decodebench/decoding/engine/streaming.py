"""Streaming: a streamer interface for every strategy, and the two emission rules for beam search.

A streamer receives, per batch row, the generated tokens once they are final::

    put(row, token_ids)      new tokens for the row (appended to what it had)
    revise(row, keep)        lookahead rule only: tokens after the first `keep` are withdrawn
    end(row)                 the row is complete
    close(outputs)           the engine hands the batch's final outputs: flush, reconcile, end rows

`generate(..., streamer_factory=f)` calls `f(rows)` once per batch; `text_streamer(tokenizer, on_text)`
builds such a factory that turns tokens into text as transformers' TextStreamer does (text up to the
last space, whole lines, CJK characters at once), and `StreamIterator` yields the same text from
another thread. The sampling loop calls the streamer once per step as `streamer(step, tokens,
finished)`; search methods call `put`/`revise` themselves.

Beam search's final answer is known only at the end, so `BeamStream` decides what may be emitted early:

* `safe`: the longest prefix shared by every live beam and every kept finished hypothesis. Every later
  hypothesis extends one of them, so this prefix can never be revised; the stream equals the output.
* `lookahead k`: the best beam's tokens once the same beam (each step's leader a child of the last
  one's) has led for k consecutive steps (the rule of the classic streaming write-ups). A later leader,
  or the final output, that disagrees is a revision: counted, the stream cut back to the agreement.

Both record, per prompt, how many tokens of the final output were emitted before the end and the
step of the first emission, so time to first emitted token can be measured. All tracking is tensor
work on the device; only delivering tokens to a callback reads them back (one sync per step).
"""

from __future__ import annotations

import queue
import time
import unicodedata
from typing import Callable, Optional

import torch


class Streamer:
    """Base streamer: override `put`, and `revise`/`end` when needed. Rows index the batch's requests."""

    def put(self, row: int, token_ids: list[int]) -> None:
        pass

    def revise(self, row: int, keep: int) -> None:
        pass

    def end(self, row: int) -> None:
        pass

    def __init__(self) -> None:
        self.sent: dict[int, list[int]] = {}  # row -> tokens delivered so far (after revisions)
        self._ended: set[int] = set()  # rows already closed
        self._prev_done: Optional[list[bool]] = None

    # bookkeeping wrappers: methods call these, subclasses override the plain ones
    def emit(self, row: int, token_ids: list[int]) -> None:
        if token_ids:
            self.sent.setdefault(row, []).extend(token_ids)
            self.put(row, list(token_ids))

    def withdraw(self, row: int, keep: int) -> None:
        have = self.sent.setdefault(row, [])
        if keep < len(have):
            del have[keep:]
            self.revise(row, keep)

    def __call__(self, step: int, tokens: torch.Tensor, finished: torch.Tensor) -> None:
        """The sampling loop's per-step call: one token for every row that was still running."""
        toks, done = tokens.tolist(), finished.tolist()  # streaming needs the host: one sync per step
        prev = self._prev_done or [False] * len(toks)
        for i, (t, was_done) in enumerate(zip(toks, prev)):
            if not was_done:
                self.emit(i, [t])
        self._prev_done = done

    def close(self, outputs) -> None:
        """Reconcile with the final outputs (a stop string may cut what was streamed) and end every row.

        Idempotent: search methods close their batch themselves, the engine closes the others.
        """
        for i, o in enumerate(outputs):
            if i in self._ended:
                continue
            have = self.sent.get(i, [])
            n = 0
            while n < min(len(have), len(o.token_ids)) and have[n] == o.token_ids[n]:
                n += 1
            self.withdraw(i, n)
            self.emit(i, list(o.token_ids[n:]))
            self._ended.add(i)
            self.end(i)


def as_streamer(obj) -> Optional[Streamer]:
    """A Streamer, or a plain `fn(row, token_ids)` callback wrapped as one, or None."""
    if obj is None or isinstance(obj, Streamer):
        return obj
    return CallbackStreamer(obj)


class CallbackStreamer(Streamer):
    def __init__(self, fn: Callable[[int, list[int]], None]):
        super().__init__()
        self.fn = fn

    def put(self, row: int, token_ids: list[int]) -> None:
        self.fn(row, token_ids)


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


class TextStreamer(Streamer):
    """Token ids -> text per row, released as transformers' TextStreamer releases it.

    `on_text(row, text)` gets each piece of final text; `on_revise(row, text)` (lookahead rule) gets
    the row's whole text after a revision, which replaces everything shown before.
    """

    def __init__(self, tokenizer, on_text: Callable[[int, str], None],
                 on_revise: Optional[Callable[[int, str], None]] = None, skip_special_tokens: bool = True):
        super().__init__()
        self.tok, self.on_text, self.on_revise = tokenizer, on_text, on_revise
        self.skip = skip_special_tokens
        self.shown: dict[int, int] = {}  # row -> characters released

    def _text(self, row: int) -> str:
        return self.tok.decode(self.sent.get(row, []), skip_special_tokens=self.skip)

    def put(self, row: int, token_ids: list[int]) -> None:
        text, shown = self._text(row), self.shown.get(row, 0)
        if text.endswith("\n") or (text and _is_cjk(text[-1])):
            upto = len(text)
        else:
            upto = max(text.rfind(" ") + 1, shown)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the rest of it
            upto = shown
        if upto > shown:
            self.on_text(row, text[shown:upto])
            self.shown[row] = upto

    def revise(self, row: int, keep: int) -> None:
        text = self._text(row)
        self.shown[row] = min(self.shown.get(row, 0), len(text))
        if self.on_revise is not None:
            self.on_revise(row, text[: self.shown[row]])

    def end(self, row: int) -> None:
        text, shown = self._text(row), self.shown.get(row, 0)
        if len(text) > shown:
            self.on_text(row, text[shown:])
        self.shown[row] = len(text)


def text_streamer(tokenizer, on_text: Callable, on_revise: Optional[Callable] = None):
    """A `streamer_factory` for `generate`: `on_text(request, text)` for every released piece."""

    def factory(rows):
        return TextStreamer(tokenizer, lambda i, s: on_text(rows[i], s),
                            None if on_revise is None else (lambda i, s: on_revise(rows[i], s)))

    return factory


class StreamIterator:
    """Iterate over `(prompt_id, sample_index, text)` while `generate` runs in another thread.

        it = StreamIterator(tokenizer)
        th = threading.Thread(target=lambda: (generate(..., streamer_factory=it.factory), it.finish()))
        th.start()
        for prompt_id, sample_index, text in it: print(text, end="")
    """

    _DONE = object()

    def __init__(self, tokenizer, timeout: Optional[float] = None):
        self.queue: queue.Queue = queue.Queue()
        self.timeout = timeout
        self.factory = text_streamer(tokenizer, lambda r, s: self.queue.put((r.prompt_id, r.sample_index, s)))

    def finish(self) -> None:
        self.queue.put(self._DONE)

    def __iter__(self):
        while True:
            item = self.queue.get(timeout=self.timeout)
            if item is self._DONE:
                return
            yield item


class BeamStream:
    """Emission rule for P prompts of a beam-type search; tensors on the device, `[P, L]` buffers.

    `deliver(p, ids)` / `revise(p, keep)` (optional) receive prompt p's emitted tokens as they happen.
    """

    def __init__(self, rule: str, lookahead: int, P: int, L: int, device, pad: int,
                 deliver: Optional[Callable[[int, list[int]], None]] = None,
                 revise: Optional[Callable[[int, int], None]] = None, t0: Optional[float] = None):
        if rule not in ("safe", "lookahead"):
            raise ValueError(f"stream must be 'safe' or 'lookahead', got {rule!r}")
        self.rule, self.k, self.L = rule, lookahead, L
        self.deliver, self.on_revise, self.t0 = deliver, revise, t0
        z = lambda: torch.zeros(P, dtype=torch.long, device=device)  # noqa: E731
        self.emitted, self.count, self.revisions, self.total = z(), z(), z(), z()
        self.first = torch.full((P,), -1, dtype=torch.long, device=device)
        self.seq = torch.full((P, L), pad, dtype=torch.long, device=device)  # emitted tokens (lookahead)
        self.pos = torch.arange(L, device=device)
        self.first_s: list[Optional[float]] = [None] * P
        self.steps = 0

    def step(self, t: int, running: torch.Tensor, finished: Optional[torch.Tensor] = None,
             fin_len: Optional[torch.Tensor] = None, fin_on: Optional[torch.Tensor] = None,
             leader_kept: Optional[torch.Tensor] = None) -> None:
        """After step t (t + 1 tokens generated). running `[P, M, L]` (beam 0 leads); finished
        `[P, F, L]` with lengths `fin_len` and validity `fin_on` `[P, F]`; `leader_kept` `[P]` bool:
        this step's leader is a child of the last step's leader (lookahead rule)."""
        n = t + 1
        self.steps = n
        before = self.emitted.clone() if self.deliver is not None else None
        ref = running[:, 0, :n]
        if self.rule == "safe":
            same = (running[:, :, :n] == ref[:, None]).all(1)  # [P, n]
            if finished is not None:
                fin_same = (finished[:, :, :n] == ref[:, None]) & (self.pos[:n] < fin_len[:, :, None])
                same &= (fin_same | ~fin_on[:, :, None]).all(1)
            lcp = same.long().cumprod(-1).sum(-1)
            keep = self.emitted
            self.emitted = torch.maximum(self.emitted, lcp)
            self.seq[:, :n] = ref  # the emitted prefix is a prefix of every member, ref included
        else:
            kept = leader_kept if leader_kept is not None else torch.ones_like(self.count, dtype=torch.bool)
            self.count = torch.where(kept, self.count + 1, torch.ones_like(self.count))
            agree = (ref == self.seq[:, :n]).long().cumprod(-1).sum(-1)
            contra = agree < self.emitted
            self.revisions += contra.long()
            self.emitted = torch.where(contra, agree, self.emitted)
            keep = self.emitted.clone()
            go = self.count >= self.k
            self.total += torch.where(go, n - self.emitted, 0)
            self.seq[:, :n] = torch.where(go[:, None], ref, self.seq[:, :n])
            self.emitted = torch.where(go, torch.full_like(self.emitted, n), self.emitted)
        self.first = torch.where((self.first < 0) & (self.emitted > 0), t, self.first)
        if self.deliver is not None:
            self._deliver(before, keep)

    def _deliver(self, before: torch.Tensor, keep: torch.Tensor) -> None:
        b, k, a = before.tolist(), keep.tolist(), self.emitted.tolist()
        if b == a == k:
            return
        seq = self.seq.tolist()
        now = time.perf_counter()
        for p, (x, kept, y) in enumerate(zip(b, k, a)):
            if kept < x and self.on_revise is not None:
                self.on_revise(p, kept)
            if y > kept:
                self.deliver(p, seq[p][kept:y])
            if y > 0 and self.first_s[p] is None and self.t0 is not None:
                self.first_s[p] = now - self.t0

    def finish(self, best: list[list[int]]) -> list[dict]:
        """Check the emitted prefixes against the final best outputs, flush the rest; stats per prompt."""
        emitted, seq = self.emitted.tolist(), self.seq.tolist()
        revisions, total, first = self.revisions.tolist(), self.total.tolist(), self.first.tolist()
        stats = []
        for p, out in enumerate(best):
            e = min(emitted[p], len(seq[p]))
            agree = 0
            while agree < min(e, len(out)) and seq[p][agree] == out[agree]:
                agree += 1
            if agree < e:  # the final output contradicts what was emitted (lookahead only)
                revisions[p] += 1
                if self.on_revise is not None:
                    self.on_revise(p, agree)
            if self.deliver is not None and len(out) > agree:
                self.deliver(p, list(out[agree:]))
            s = {"stream_rule": self.rule, "stream_emitted": agree,
                 "stream_first_step": first[p] if first[p] >= 0 else None, "stream_steps": self.steps}
            if self.rule == "lookahead":
                s.update(stream_lookahead=self.k, stream_revisions=revisions[p], stream_emitted_total=total[p])
            if self.first_s[p] is not None:
                s["stream_first_s"] = self.first_s[p]
            stats.append(s)
        return stats
