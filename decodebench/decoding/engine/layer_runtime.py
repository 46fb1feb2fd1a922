"""Runtimes whose next-token logits combine the target's final logits with other logits of the same step:
an early layer's (DoLa; a truncated amateur) or a second model's (an amateur), so contrastive decoding and
DoLa run in the engine's running batch as they are (continuous batching, per-row transforms, telemetry).

An early layer costs nothing extra: the target's forward returns every layer's hidden state
(`output_hidden_states`); in transformers 5 `hidden_states[i]` is layer i-1's output for 0 < i < L (index 0
the embeddings) and `hidden_states[L]` the final, normed one. The target truncated to its first N layers is
`lm_head(norm(hidden_states[N]))`, exactly (the first N layers compute the same thing either way).

A second model gets its own static KV state (`TiedKV`), tied to the target's: same slots and columns, the
same write column, window and prefill rows, and every compaction or realignment of the target's state
moves it too. Both models read the same token layout (they share the tokenizer), so one mask serves both.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from decodebench.decoding.engine.kvcache import Runtime, SlotKV, SlotLayer

# SlotKV's state a TiedKV reads from its owner (the target's state) instead of keeping its own
_SHARED = ("slots", "capacity", "static_shapes", "mode", "col", "lo", "col_t", "rows", "src")


class TiedKV(SlotKV):
    """A second model's keys and values, following the owner's write position and slots."""

    def __init__(self, owner: SlotKV, num_layers: int):
        self.__dict__["owner"] = owner
        self._scratch = None  # its own gather buffer (select_slots)
        Cache.__init__(self, layers=[SlotLayer(self) for _ in range(num_layers)])

    def __getattr__(self, name):
        if name in _SHARED:
            return getattr(self.__dict__["owner"], name)
        raise AttributeError(name)


class PairedKV(SlotKV):
    """The target's state, with a partner that follows every slot selection and column shift."""

    partner: Optional[TiedKV] = None

    def tensors(self):
        yield from super().tensors()
        if self.partner is not None:
            yield from self.partner.tensors()

    def select_slots(self, index: Tensor, count: int) -> None:
        super().select_slots(index, count)
        if self.partner is not None:
            self.partner.select_slots(index, count)


def num_layers(model) -> int:
    return getattr(model.config, "num_hidden_layers", None) or len(model.model.layers)


def head_logits(model, hidden: Tensor, norm: bool) -> Tensor:
    """The LM head on a hidden state (after the final norm when `norm`), float32 like the final logits."""
    if norm:
        hidden = model.model.norm(hidden)
    return model.get_output_embeddings()(hidden).to(torch.float32)


class CombinedRuntime(Runtime):
    """`combine(final [n, q, V], hidden_states tuple (last q positions), amateur [n, q, V] or None)` ->
    the logits the running batch transforms and samples from."""

    def __init__(self, model, combine: Callable, *, amateur=None, early_layers: bool = False, **kw):
        kw.pop("hidden_states", None)
        super().__init__(model, hidden_states=False, **kw)
        self.combine, self.amateur, self.early_layers = combine, amateur, early_layers
        if amateur is not None:
            impl = getattr(amateur.config, "_attn_implementation", None) or "sdpa"
            if (impl == "eager") != self.additive_mask:
                raise ValueError("amateur: the amateur and the target must use the same attention implementation "
                                 f"(got {impl!r} and {model.config._attn_implementation!r})")
        self.amateur_tokens = 0

    def allocate(self, slots: int, capacity: int) -> SlotKV:
        if self.kv is not None and self.kv.slots >= slots and self.kv.capacity == capacity:
            self.kv.col, self.kv.lo, self.kv.mode = 0, 0, "decode"
            return self.kv
        self.kv = None
        kv = PairedKV(num_layers(self.model), slots, capacity, self.device, self.static_shapes)
        if self.amateur is not None:
            kv.partner = TiedKV(kv, num_layers(self.amateur))
        self.kv = kv
        return kv

    def _forward(self, ids: Tensor, pos: Tensor, mask: Tensor, keep: int = 1):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.kv, use_cache=True,
                         logits_to_keep=keep, output_hidden_states=self.early_layers)
        self.forward_passes += 1
        self.tokens_processed += int(ids.numel())
        final = out.logits.to(torch.float32)
        hidden = tuple(h[:, -keep:] for h in out.hidden_states) if self.early_layers else None
        amateur = None
        if self.amateur is not None:
            a = self.amateur(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.kv.partner,
                             use_cache=True, logits_to_keep=keep)
            amateur = a.logits.to(torch.float32)
            self.tokens_processed += int(ids.numel())  # the amateur's tokens cost too (fair cost columns)
        return self.combine(final, hidden, amateur), None


_AMATEURS: dict = {}  # a second model, loaded once per process (name, device, dtype)


def load_second_model(name: str, model, what: str):
    """A second model on the target's device and dtype; its vocabulary must be the target's."""
    from decodebench.models import ModelConfig, load_model

    dev = next(model.parameters()).device
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    key = (name, str(dev), dtype)
    if key not in _AMATEURS:
        _AMATEURS.clear()
        _AMATEURS[key] = load_model(ModelConfig(name_or_path=name), device=str(dev), dtype=dtype)[0]
    other = _AMATEURS[key]
    v_t = model.get_output_embeddings().weight.shape[0]
    v_o = other.get_output_embeddings().weight.shape[0]
    if v_t != v_o:
        raise ValueError(f"{what}: model {name!r} has a vocabulary of {v_o} tokens, the target {v_t}; "
                         "it must share the target's tokenizer")
    return other
