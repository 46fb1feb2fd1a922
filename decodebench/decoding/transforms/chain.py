"""`LogitsChain`: a batch's transforms, packed once into per-row tensors, applied in one order.

The engine's view::

    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=eos, device=dev,
                                  tokenizer=tok)  # tokenizer: grammars and text DRY breakers need it
    chain.names                       # e.g. ['repetition_penalty', 'temperature', 'top_k', 'top_p']
    for step in range(max_new):
        state = DecodeState(input_ids, attention_mask, prompt_width, step,  # [B, T] left-padded ids
                            keys=keys)  # [B] row keys: XTC's coins
        logits = chain(model_logits, state)                                 # [B, V] -> [B, V]
        tokens = sample(logits, keys, step, chain.sample_mode, support=chain.support)  # [B]
        chain.update(tokens)          # keeps the counts incremental; advances mirostat and grammars
        ...
    # rows left and joined: new = LogitsChain.from_rows(new_rows, ...); new.carry_state(chain, index)
    # (index[j]: the old row of new row j, None for a joined row), or chain.select(index)
    chain.raise_if_nan()              # every N steps, or at the end: one sync

`chain.sample_mode` (a bool when the batch agrees), `chain.support` (a bound on finite logits per
sampled row, when top_k is on for all of them) and `chain.candidates` (the last call's sort-free
candidate set, when a sort-free filter ran last) let `sample` skip work; all are optional.

Penalties need the token history: `state.input_ids`, padding excluded via the attention mask (the
repetition penalty and n-gram bans read it directly, `O(B * T)`). Presence and frequency penalties
need a `[B, V]` count table of generated tokens; `update(tokens)` after each step adds one token per row
with `scatter_add_` instead of rebuilding the table from `input_ids`. The table is trusted only while
its step matches `state.step`, so skipping `update` is always correct, just slower.

NaN: each call ORs `isnan(amax(logits))` into a device flag without reading it back; `raise_if_nan()`
reads it (a sync) and raises `NaNLogitsError`. `process_logits` raises at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from decodebench.registry import did_you_mean

import decodebench.decoding.transforms.binding as binding
from decodebench.decoding.params.table import SamplingParams
from decodebench.decoding.transforms.penalties import counts_with_spare
from decodebench.decoding.transforms.registry import TRANSFORMS, PackContext, StatefulStep, resolve_order
from decodebench.decoding.transforms.candidates import collect_offers, on_host


class NaNLogitsError(ValueError):
    """The model produced NaN logits; sampling from them would be silent garbage."""


@dataclass
class DecodeState:
    input_ids: Tensor  # [B, T] prompt + generated so far, LEFT-padded
    attention_mask: Tensor  # [B, T] 1 for real tokens, 0 for padding
    prompt_width: int | Tensor  # generated tokens are input_ids[:, prompt_width:]; or `[B, 1]` per row
    step: int  # steps run so far by this batch (keys the incremental tables)
    row_step: Tensor | None = None  # `[B]` tokens generated per row, when rows started at different steps
    keys: Tensor | None = None  # [B] int64 row keys (sampling.row_keys): XTC draws its coin from them

    def generated(self) -> Tensor:
        """`[B]` (or scalar) tokens generated so far per row."""
        return self.step if self.row_step is None else self.row_step


# Transforms after which a sampled row usually keeps a small part of the vocabulary. Only a cost hint for
# `sampling.sample(probe=...)`: the token never depends on it. Others (penalties, biases, bans of a few
# tokens, temperature, user transforms) leave most rows' logits finite, where a probe would be wasted.
TRUNCATING = frozenset({"grammar", "prefix_allowed_tokens_fn", "min_k", "top_h", "top_k", "top_p", "min_p", "p_less",
                        "p_less_norm", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma", "tfs_z", "mirostat"})


def _shares_storage(a: Tensor, b: Tensor) -> bool:
    """Is `a` the caller's tensor or a view of it (a step that passed its input through)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class Tables:
    """Per-call access to the state and the shared history tables (built at most once per call)."""

    def __init__(self, chain: "LogitsChain", state: DecodeState) -> None:
        self.chain, self.state = chain, state
        self.owned: Tensor | None = None  # the logits an earlier step of this call made (never the caller's)

    def counts(self) -> Tensor:
        """`[B, V]` int32 counts of generated tokens."""
        c = self.chain
        if c._counts is None or (not c.counts_kept and c._counts_step != self.state.step):
            s = self.state
            ids, mask = s.input_ids, s.attention_mask
            if isinstance(s.prompt_width, Tensor):  # per-row prompt ends: count generated columns only
                ids = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device) < s.prompt_width, c.vocab_size)
                c._counts = counts_with_spare(ids, c.vocab_size, mask, 0)
            else:
                c._counts = counts_with_spare(ids, c.vocab_size, mask, s.prompt_width)
            c._counts_step = s.step
        return c._counts[:, : c.vocab_size]

    def history(self, prompt_rows: Tensor | None) -> Tensor:
        """`[B, T]` ids that count, -1 elsewhere: real generated tokens, plus real prompt tokens for rows
        where `prompt_rows` (`[B, 1]` bool) is True."""
        s = self.state
        count = s.attention_mask != 0
        generated = torch.arange(s.input_ids.shape[1], device=count.device) >= s.prompt_width
        count &= generated if prompt_rows is None else generated | prompt_rows
        return s.input_ids.masked_fill(~count, -1)


class LogitsChain:
    """A batch's transforms in order; build with `from_rows`. See the module docstring."""

    def __init__(self, rows: list[SamplingParams], ctx: PackContext, steps: list, names: list[str],
                 support: int | None = None) -> None:
        self.rows, self._ctx, self._steps, self.names = rows, ctx, steps, names
        # transforms with per-row state across steps (mirostat, grammar): updated by `update`, carried by `select`
        self._stateful: dict[str, StatefulStep] = {}  # filled by from_rows, which knows each step's name
        # at most this many finite logits per sampled row leave the chain (top_k on all of them, plus
        # slack for ties): lets `sample` draw noise for those tokens only. None: no such bound.
        self.support = support
        # a truncating filter ran (top-p, min-p, typical, ...): most sampled rows keep few tokens, so on a CPU
        # `sample` may look for them with a top-k probe instead of racing over the whole row (same token)
        self.truncates = any(n in TRUNCATING for n in names)
        # set by each eager call: `(ids [B, K], inside [B])` when the last transform was a sort-free filter
        # (top-p's candidates), `inside` where the row's kept set lies within its ids; `sample` then
        # races over those K tokens only (same noise per token id, so the same token). None otherwise.
        self.candidates: tuple[Tensor, Tensor] | None = None
        self.vocab_size = ctx.vocab_size
        self._counts: Tensor | None = None  # [B, V + 1] int32; column V absorbs padding
        self._counts_step: int | None = None
        # the engine keeps the counts in step itself (update every step, `reset_rows` when a row joins),
        # so the table is trusted without comparing step numbers: no host int inside a compiled step
        self.counts_kept = False
        self._nan = torch.zeros((), dtype=torch.bool, device=ctx.device)
        self._one: Tensor | None = None
        greedy = [r.greedy for r in rows]
        self.do_sample = torch.tensor([not g for g in greedy], dtype=torch.bool, device=ctx.device)
        # what to hand `sample`: a plain bool when the batch agrees, so it skips the unused path
        self.sample_mode: bool | Tensor = self.do_sample if len(set(greedy)) > 1 else not greedy[0]

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[SamplingParams],
        *,
        vocab_size: int,
        eos_token_id: int | Sequence[int] | None,
        device,
        dtype: torch.dtype = torch.float32,
        tokenizer=None,
    ) -> "LogitsChain":
        """Pack the rows' settings once. All rows must share one `order`. `tokenizer` (a Hugging Face
        tokenizer) is needed only by grammars and by DRY sequence breakers given as text."""
        rows = list(rows)
        if not rows or not all(isinstance(r, SamplingParams) for r in rows):
            raise ValueError("from_rows needs a non-empty sequence of SamplingParams")
        orders = sorted({repr(r.order) for r in rows})
        if len(orders) > 1:
            raise ValueError(f"all rows of a batch must share one order; got {', '.join(orders)}")
        eos = () if eos_token_id is None else (eos_token_id,) if isinstance(eos_token_id, int) else tuple(eos_token_id)
        ctx = PackContext(rows, vocab_size, torch.device(device), dtype, tuple(int(e) for e in eos),
                          tokenizer=tokenizer)
        names = resolve_order(rows[0].order)
        _check_covered(rows, names)
        active = [(n, on) for n in names for on in [[TRANSFORMS.get(n).is_on(r) for r in rows]] if any(on)]
        steps, applied = [], [n for n, _ in active]  # nobody asked for the others: the batch skips them
        step_names: list[str] = []
        i = 0
        while i < len(active):
            name, on = active[i]
            if name == "top_k" and i + 1 < len(active) and active[i + 1][0] == "top_p":
                ctx.support = _support_after_top_k(ctx, ["top_k"], active[i + 1][1])
                if ctx.support is not None and on_host(ctx.device):  # else: two steps, top_p sorts
                    steps.append(binding.bind_top_k_top_p(ctx, on, active[i + 1][1]))
                    step_names.append("top_k+top_p")
                    i += 2
                    continue
            if name == "top_p":
                ctx.support = _support_after_top_k(ctx, applied[:i], on)
            steps.append(TRANSFORMS.get(name).bind(ctx, on))
            step_names.append(name)
            i += 1
        sampled = [not r.greedy for r in rows]
        chain = cls(rows, ctx, steps, applied, _support_after_top_k(ctx, applied, sampled))
        chain._stateful = {n: st for n, st in zip(step_names, steps) if isinstance(st, StatefulStep)}
        return chain

    def __call__(self, logits: Tensor, state: DecodeState) -> Tensor:
        """`[B, V]` float logits -> transformed `[B, V]`, same dtype."""
        if logits.dim() != 2 or logits.shape[0] != len(self.rows) or logits.shape[1] != self.vocab_size:
            raise ValueError(f"logits {tuple(logits.shape)} do not match the chain "
                             f"({len(self.rows)}, {self.vocab_size})")
        self._nan |= torch.isnan(logits.amax())  # amax propagates NaN: one read pass, no read-back
        tables = Tables(self, state)
        if torch.compiler.is_compiling():  # compiled steps race over the whole row
            for step in self._steps:
                logits = step(logits, tables)
            return logits
        self.candidates = None
        with collect_offers() as found:
            before, given = 0, logits
            for step in self._steps:
                before = len(found)
                tables.owned = None if _shares_storage(logits, given) else logits  # steps may write into their own
                logits = step(logits, tables)
            # only the last step's offer holds: every finite logit of an `inside` row is among its ids
            if len(found) > before and found[-1][0].shape[0] == logits.shape[0]:
                self.candidates = found[-1]
        return logits

    def update(self, new_tokens: Tensor) -> None:
        """Count one more generated token per row (`[B]` ids; ids < 0 or >= V count as padding).

        Call after each step; the counts then stay valid for `state.step + 1`. Stateful transforms
        (mirostat's mu, grammar matchers) advance here only: with them, calling it is required.
        """
        for st in self._stateful.values():
            st.update(new_tokens)
        if self._counts is None:
            return  # no transform reads counts, or none built yet: the next call builds from input_ids
        v = self.vocab_size
        ids = new_tokens.reshape(-1, 1).to(self._counts.device, torch.long)
        ids = ids.masked_fill((ids < 0) | (ids >= v), v)
        self._counts.scatter_add_(1, ids, self._ones(ids.shape[0]))
        if not self.counts_kept:
            self._counts_step += 1

    def _ones(self, b: int) -> Tensor:
        """`[b, 1]` int32 ones for `update`'s scatter_add_, made once per batch size."""
        if self._one is None or self._one.shape[0] != b:
            self._one = torch.ones((b, 1), dtype=torch.int32, device=self._ctx.device)
        return self._one

    def reset_rows(self, rows: Tensor) -> None:
        """Rows `rows` start a new request with the same settings (continuous batching without a rebuild):
        no generated token counted for them. Only for chains without stateful transforms."""
        if self._stateful:
            raise ValueError("a chain with stateful transforms is rebuilt when rows join, not reset")
        if self._counts is not None:
            self._counts.index_fill_(0, rows, 0)

    def select(self, index: Tensor | Sequence[int]) -> "LogitsChain":
        """The chain for rows `index` (finished-row compaction, beam reordering); keeps the tables.

        Reads `index` on the host (one sync): call it when the batch changes shape, not every step.
        """
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        ctx = self._ctx
        new = LogitsChain.from_rows([self.rows[i] for i in idx], vocab_size=ctx.vocab_size,
                                    eos_token_id=ctx.eos_ids, device=ctx.device, dtype=ctx.dtype,
                                    tokenizer=ctx.tokenizer)
        new.carry_state(self, idx)  # the selected rows' mu, matchers, ...
        rows = torch.tensor(idx, dtype=torch.long, device=ctx.device)
        if self._counts is not None:
            new._counts, new._counts_step = self._counts.index_select(0, rows), self._counts_step
        new._nan = self._nan.clone()
        return new

    def carry_state(self, old: "LogitsChain", index: Sequence[int | None]) -> None:
        """Give this chain's row j the per-row state (mirostat's mu, grammar matchers) of `old`'s row
        `index[j]`; `None` marks a row that joined the batch, which keeps its fresh state. For a chain
        rebuilt with `from_rows` when rows leave and join (continuous batching): without this, stateful
        transforms would restart."""
        for name, st in self._stateful.items():
            if name in old._stateful:
                st.adopt(old._stateful[name], list(index))
            elif any(i is not None for i in index):
                raise ValueError(f"rows kept from the old chain need {name}'s state, which it does not have")

    def nan_flag(self) -> Tensor:
        """0-dim bool on the device: has any call seen a NaN logit? (No sync.)"""
        return self._nan

    def raise_if_nan(self) -> None:
        if bool(self._nan):  # the one read-back, when the caller chooses
            raise NaNLogitsError("the model produced NaN logits; refusing to sample from them")

    def __repr__(self) -> str:
        return f"LogitsChain(rows={len(self.rows)}, names={self.names})"


def _check_covered(rows: list[SamplingParams], names: list[str]) -> None:
    """A row asking for a transform its order leaves out is an error, not a silent no-op."""
    for name, spec in TRANSFORMS.items():
        if name not in names:
            asking = [i for i, r in enumerate(rows) if spec.is_on(r)]
            if asking:
                raise ValueError(f"row {asking[0]} sets {name} but order {rows[0].order!r} leaves it out; add {name!r}")
    known = {p for _, s in TRANSFORMS.items() if s.user for p in s.params}
    for i, r in enumerate(rows):
        for p, _ in r.extra:
            if p not in known:
                raise ValueError(f"row {i}: " + did_you_mean("transform parameter", p, sorted(known)))


def _support_after_top_k(ctx: PackContext, applied: list[str], rows_of_interest: list[bool]) -> int | None:
    """A bound on finite logits per row of interest when top_k ran on all of them; else None.

    Transforms after top_k only remove tokens (a bias on -inf stays -inf), and the users of this
    bound check it per row anyway, so it is a speed hint, never a correctness assumption.
    """
    if "top_k" not in applied:
        return None
    on_k = [TRANSFORMS.get("top_k").is_on(r) for r in ctx.rows]
    bounds = binding.top_k_bounds(ctx, on_k)
    need = [b for b, p in zip(bounds, rows_of_interest) if p]
    if not need or any(b is None for b in need):
        return None
    k = max(need)
    return k + max(16, k // 4)  # slack for ties at the k-th value (top_k keeps them all)
