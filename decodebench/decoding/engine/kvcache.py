"""Static KV state and the model forward over it: the cache every search method builds on.

State is allocated once per running batch: keys and values `[S, H, C, D]` per layer for S slots (rows)
and C columns, the token ids `[S, C]` and a validity mask `[S, C]`. Every slot writes its next token in
the SAME column `col`; a slot's tokens sit right-aligned before it (a row that joined later simply has
more invalid columns to its left). So one decode step writes one column in place, with one shared
write index, and every row's query sits at the last column: causality needs no per-row offset.

    prefill(slots, prompts)   rows' prompts -> columns [col - W, col) of their slots; logits [n, V]
    decode(tokens [S])        column `col` for every slot; logits [S, V]; col += 1

Position ids count a row's real tokens only, so a row's positions (and, up to floating-point
summation order, its logits) do not depend on its batch-mates or on the column it was written at.

Attention reads the window `[lo, col]`, where `lo` is the first column any live row still needs (a host
int, moved when rows leave): on a CPU this keeps attention proportional to the live length, not to C.
With `static_shapes` (compiled steps, CUDA graphs) the window is the whole buffer and the write index is
a device tensor, so every step has the same shapes and addresses.

When `col` reaches C, `realign` moves every column left by the same amount (one copy per layer, every
~R steps): rows' relative layout, and so their results, do not change.

The cache is a transformers `Cache`, given to the model as `cache=`; the mask is passed as a prepared 4D
mask (`[n, 1, q, kv]`: bool for sdpa, additive for eager), which transformers uses as it is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotLayer(CacheLayerMixin):
    """One layer's `[S, H, C, D]` keys and values; writes where the owning `SlotKV` says."""

    is_compileable = True
    is_sliding = False

    def __init__(self, owner: "SlotKV"):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        o = self.owner
        s = (o.slots, key_states.shape[1], o.capacity)
        self.keys = torch.zeros(*s, key_states.shape[-1], dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros(*s, value_states.shape[-1], dtype=value_states.dtype, device=value_states.device)
        if o.static_shapes and not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(self.keys)
            torch._dynamo.mark_static_address(self.values)
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        o = self.owner
        if o.mode == "prefill":
            # the new rows attend only to their own prompt: hand back what came in, keep a copy
            c0 = o.col - key_states.shape[2]
            src = o.src
            self.keys[o.rows, :, c0:o.col] = key_states if src is None else key_states[src]
            self.values[o.rows, :, c0:o.col] = value_states if src is None else value_states[src]

            return key_states, value_states
        if o.mode == "rows":  # shared histories (shared.py): only the groups' leaders, KV rows `o.rows`
            r, c = o.rows, o.col
            self.keys[r, :, c:c + 1] = key_states
            self.values[r, :, c:c + 1] = value_states
            # index_select of the window, not advanced indexing: the same copy, 4x faster on a CPU
            return (self.keys[:, :, o.lo:c + 1].index_select(0, r),
                    self.values[:, :, o.lo:c + 1].index_select(0, r))
        if o.static_shapes:  # the running batch is a bucket of the first `a` slots; the window is every column
            a = key_states.shape[0]
            keys, values = self.keys[:a], self.values[:a]
            keys.index_copy_(2, o.col_t, key_states)
            values.index_copy_(2, o.col_t, value_states)
            return keys, values
        q = key_states.shape[2]  # 1, or the k candidates of contrastive search
        a = key_states.shape[0]  # the first `a` slots are the running batch
        self.keys[:a, :, o.col:o.col + q] = key_states
        self.values[:a, :, o.col:o.col + q] = value_states
        return self.keys[:a, :, o.lo:o.col + q], self.values[:a, :, o.lo:o.col + q]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.capacity, 0

    def get_seq_length(self) -> int:
        return self.owner.col

    def get_max_length(self) -> int:
        return self.owner.capacity


class SlotKV(Cache):
    """Static keys and values for `slots` rows x `capacity` columns (see the module docstring)."""

    def __init__(self, num_layers: int, slots: int, capacity: int, device, static_shapes: bool = False):
        self.slots, self.capacity, self.static_shapes = slots, capacity, static_shapes
        self.mode = "decode"
        self.col, self.lo = 0, 0
        self.col_t = torch.zeros(1, dtype=torch.long, device=device)  # the write index, for static shapes
        self.rows: Optional[Tensor] = None
        self.src: Optional[Tensor] = None
        self._scratch: Optional[Tensor] = None
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])

    def tensors(self):
        for layer in self.layers:
            if layer.is_initialized:
                yield layer.keys
                yield layer.values

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def select_slots(self, index: Tensor, count: int) -> None:
        """Slots `index` become slots `0..count-1` (compaction, beam reordering): one gather per layer into
        a scratch buffer kept for the next call, so no step allocates (and page-faults) a cache's worth."""
        own = [t for layer in self.layers if layer.is_initialized for t in (layer.keys, layer.values)]
        for t in own:  # this cache's own layers: a subclass moves the caches it ties to itself
            if self._scratch is None or self._scratch.shape != t.shape or self._scratch.dtype != t.dtype:
                self._scratch = torch.empty_like(t)
            buf = self._scratch[:count]
            torch.index_select(t, 0, index, out=buf)
            t[:count].copy_(buf)

    def copy_column(self, src: Tensor, dst: int) -> None:
        """Column `src[i]` of slot i -> column `dst` (contrastive search keeps its chosen candidate)."""
        for t in self.tensors():
            a = src.shape[0]
            idx = src.view(a, 1, 1, 1).expand(a, t.shape[1], 1, t.shape[3])
            t[:a, :, dst:dst + 1] = t[:a].gather(2, idx)

    def shift(self, d: int) -> None:
        """Every column moves left by `d` (right when negative); columns that leave are dropped."""
        for t in self.tensors():
            _shift(t, d, dim=2)


def _shift(t: Tensor, d: int, dim: int) -> None:
    n = t.shape[dim]
    if d > 0:
        t.narrow(dim, 0, n - d).copy_(t.narrow(dim, d, n - d).clone())
    elif d < 0:
        t.narrow(dim, -d, n + d).copy_(t.narrow(dim, 0, n + d).clone())


def check_model(model) -> None:
    """The static state serves full-attention decoders; say so plainly for anything else."""
    cfg = model.config
    types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in types) or getattr(cfg, "sliding_window", None) and getattr(
            cfg, "use_sliding_window", True) and not types:
        raise ValueError(f"model: {type(model).__name__} has sliding-window or non-attention layers, which "
                         "decodebench's engine does not serve yet; choose a full-attention decoder")


class Runtime:
    """The model's forward over a `SlotKV`: the primitives every search method builds on.

    Counts forward passes, tokens fed and row-steps (rows in decode forwards) for the cost metrics.
    """

    def __init__(self, model, *, hidden_states: bool = False, static_shapes: bool = False):
        self.model = model
        self.device = next(model.parameters()).device
        self.hidden_states = hidden_states
        self.static_shapes = static_shapes
        self.forward_passes = 0
        self.tokens_processed = 0
        self.row_steps = 0
        self.compile_s = 0.0  # first-call time of compiled shapes (compiled.py)
        impl = getattr(model.config, "_attn_implementation", None) or "sdpa"
        self.additive_mask = impl == "eager"
        self.dtype = next(model.parameters()).dtype
        self.kv: Optional[SlotKV] = None
        self.decode_fn = self._decode  # replaced by a compiled function with compile=true

    def allocate(self, slots: int, capacity: int) -> SlotKV:
        cfg = self.model.config
        n = getattr(cfg, "num_hidden_layers", None) or len(self.model.model.layers)
        if self.kv is not None and self.kv.slots >= slots and self.kv.capacity == capacity:
            self.kv.col, self.kv.lo, self.kv.mode = 0, 0, "decode"
            return self.kv  # the buffers of the last batch: no new allocation
        self.kv = None  # free the old buffers first
        self.kv = SlotKV(n, slots, capacity, self.device, self.static_shapes)
        return self.kv

    def mask4d(self, valid: Tensor, q: int, causal_tail: bool) -> Tensor:
        """`[n, 1, q, kv]` from `valid` `[n, kv]`; with `causal_tail` the last q columns are the queries'
        own (query i sees tail columns <= i), else each query sees only itself among them (candidates)."""
        n, kv = valid.shape
        m = valid[:, None, None, :].expand(n, 1, q, kv).clone()
        if q > 1:
            tail = torch.ones(q, q, dtype=torch.bool, device=valid.device)
            tail = tail.tril() if causal_tail else torch.eye(q, dtype=torch.bool, device=valid.device)
            m[:, :, :, kv - q:] &= tail
        if self.additive_mask:
            return torch.zeros(m.shape, dtype=self.dtype, device=m.device).masked_fill(~m, torch.finfo(self.dtype).min)
        return m

    def _forward(self, ids: Tensor, pos: Tensor, mask: Tensor, keep: int = 1):
        self.forward_passes += 1
        self.tokens_processed += int(ids.numel())
        return self._run(ids, pos, mask, keep)

    def _run(self, ids: Tensor, pos: Tensor, mask: Tensor, keep: int = 1):
        """The model's forward over the cache, nothing counted on the host (the compiled step's forward)."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.kv, use_cache=True,
                         logits_to_keep=keep, output_hidden_states=self.hidden_states)
        logits = out.logits.to(torch.float32)  # float32, as transformers' generate uses for its processors
        hidden = out.hidden_states[-1] if self.hidden_states else None
        return logits, hidden

    def whole_step_ok(self) -> bool:
        """The decode step can be compiled whole (forward included): a runtime whose forward is `_run`.
        Runtimes with their own `_forward` (DoLa, contrastive decoding, speculative) compile the forward."""
        return type(self)._forward is Runtime._forward

    @torch.inference_mode()
    def prefill(self, slots: Tensor, prompts: Sequence[Sequence[int]], pad_id: int,
                valid: Tensor, tokens: Tensor) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """Prompts into `slots` at columns `[col - W, col)` (W: the longest), each distinct prompt
        computed once (samples, fused points and beams of one prompt share it).

        Writes `valid` and `tokens` (`[S, C]`) for those slots; returns (last logits `[n, V]`, hidden
        `[n, W, H]` or None, per-row prompt lengths `[n]`).
        """
        kv = self.kv
        first: dict = {}
        uniq, where = [], []
        for p in prompts:
            key = tuple(p)
            if key not in first:
                first[key] = len(uniq)
                uniq.append(p)
            where.append(first[key])
        width = max(1, max(len(p) for p in uniq))
        ids = torch.full((len(uniq), width), pad_id, dtype=torch.long)
        real = torch.zeros((len(uniq), width), dtype=torch.bool)
        for i, p in enumerate(uniq):
            if p:
                ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
                real[i, width - len(p):] = True
        ids, real = ids.to(self.device), real.to(self.device)
        pos = (real.long().cumsum(-1) - 1).clamp(min=0)
        mask = self.mask4d(real, width, causal_tail=True)
        if not self.additive_mask:  # padding queries see themselves: no fully masked row anywhere
            mask[:, 0] |= torch.eye(width, dtype=torch.bool, device=self.device) & ~real[:, :, None]
        src = torch.tensor(where, dtype=torch.long, device=self.device)
        kv.mode, kv.rows, kv.src = "prefill", slots, (None if len(uniq) == len(where) else src)
        try:
            logits, hidden = self._forward(ids, pos, mask, keep=1)
        finally:
            kv.mode, kv.rows, kv.src = "decode", None, None
        c0 = kv.col - width
        valid[slots, c0:kv.col] = real[src]
        tokens[slots, c0:kv.col] = ids[src]
        lengths = real.sum(-1)[src]
        return logits[:, -1][src], (hidden[src] if hidden is not None else None), lengths

    def _decode(self, tok: Tensor, pos: Tensor, mask: Tensor):
        return self._forward(tok, pos, mask, keep=tok.shape[1])

    @torch.inference_mode()
    def decode(self, tok: Tensor, pos: Tensor, valid: Tensor, *, candidates: bool = False):
        """One decode forward for the first `a` slots: `tok` `[a, q]` at columns `[col, col + q)`,
        positions `pos` `[a, q]`; `valid` `[a, C]` already marks the new columns. Returns logits
        `[a, q, V]` (float32) and the last hidden states `[a, q, H]` (or None)."""
        kv, q = self.kv, tok.shape[1]
        if self.static_shapes:
            kv.col_t.fill_(kv.col)
            window = valid
        else:
            window = valid[:, kv.lo:kv.col + q]
        mask = self.mask4d(window, q, causal_tail=not candidates)
        self.row_steps += tok.shape[0]
        return self.decode_fn(tok, pos, mask)

