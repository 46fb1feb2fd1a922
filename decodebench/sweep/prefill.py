"""Shared prefill: in a fused batch, rows of different grid points that share a prompt are prefilled once.

A fused batch holds each prompt once per point (prompt-major), so without this the prompt's forward pass
would be computed once per point: on a CPU, and for long prompts anywhere, that is most of a short sweep's
work. `SharedPrefill` wraps the model for the engine: a prefill call (an empty KV cache) runs the model on
the distinct rows only, in their first-seen order, then copies logits and KV cache rows out to the
duplicates. Decode steps pass straight through. The distinct rows are exactly the prompts of the batch a
point run alone would prefill (same rows, same padding), so the logits are those of the point run alone.

    [p0 a, p0 b, p1 a, p1 b]  --prefill-->  model([p0, p1])  --rows [0, 0, 1, 1]-->  logits, cache [4, ...]
"""

from __future__ import annotations

import torch


class SharedPrefill:
    """The model, with duplicate rows of a prefill computed once. Everything else is the model's own."""

    def __init__(self, model):
        self._model = model
        self.saved_rows = 0  # prefill rows not computed (duplicates), for the record

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *, input_ids, attention_mask, past_key_values=None, position_ids=None, **kw):
        fresh = past_key_values is not None and past_key_values.get_seq_length() == 0
        if not fresh or input_ids.shape[0] < 2:
            return self._model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                               position_ids=position_ids, **kw)
        # one host copy per prefill (not per step): rows equal in ids and mask are one row
        first: dict = {}
        uniq, where = [], []
        for i, row in enumerate(torch.cat([input_ids, attention_mask], dim=1).tolist()):
            k = first.setdefault(tuple(row), len(uniq))
            if k == len(uniq):
                uniq.append(i)
            where.append(k)
        if len(uniq) == len(where):
            return self._model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                               position_ids=position_ids, **kw)
        uniq = torch.tensor(uniq, device=input_ids.device)
        out = self._model(input_ids=input_ids[uniq], attention_mask=attention_mask[uniq],
                          past_key_values=past_key_values,
                          position_ids=None if position_ids is None else position_ids[uniq], **kw)
        expand = torch.tensor(where, device=input_ids.device)
        past_key_values.reorder_cache(expand)  # index_select along the batch: repeats copy rows
        out.logits = out.logits[expand]
        if getattr(out, "hidden_states", None) is not None:
            out.hidden_states = tuple(h[expand] for h in out.hidden_states)
        self.saved_rows += len(where) - len(uniq)
        return out
