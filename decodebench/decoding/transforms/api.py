"""`process_logits`: one call, GenerationConfig names, any order; no engine needed.

Shapes: `logits` `[B, V]`; `input_ids` `[B, T]` (prompt + generated so far, left-padded if
`attention_mask` is given). Each parameter is a Python value for the whole batch or a `[B]` tensor with
one value per row, where a row's "off" value (what HF `generate()` skips: top_k 0, top_p 1, typical_p 1,
temperature 1, repetition_penalty 1, presence/frequency 0, epsilon/eta 0, no_repeat_ngram_size 0,
min_new_tokens 0) turns the transform off for that row. Only the parameters given are applied: there is
no hidden default (no top_k = 50). All rows are treated as sampled rows (`do_sample=True`).

Example::

    >>> x = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    >>> process_logits(x, temperature=0.5, top_k=3, top_p=0.9)
    tensor([[6., 4., -inf, -inf]])
    >>> process_logits(x, order="llamacpp", top_k=2, temperature=0.5, return_chain=True)[1]
    ['top_k', 'temperature']
"""

from __future__ import annotations

from dataclasses import fields
from typing import Sequence

import torch
from torch import Tensor

from decodebench.registry import did_you_mean

from decodebench.decoding.transforms.chain import DecodeState, LogitsChain, NaNLogitsError
from decodebench.decoding.params.table import BY_NAME, SamplingParams
from decodebench.decoding.transforms.registry import user_params

_ROW_FIELDS = {f.name for f in fields(SamplingParams)} - {"do_sample", "order", "extra"}
_NEEDS_PROMPT_LENGTH = ("presence_penalty", "frequency_penalty", "min_new_tokens")


def process_logits(
    logits: Tensor,
    input_ids: Tensor | None = None,
    *,
    order: str | Sequence[str] = "hf",
    attention_mask: Tensor | None = None,
    prompt_length: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    return_chain: bool = False,
    keys: Tensor | None = None,
    tokenizer=None,
    **params,
):
    """Apply the given transforms to `logits` `[B, V]`; returns `[B, V]` (and the resolved names when
    `return_chain=True`). `prompt_length` says how many leading positions of `input_ids` are prompt
    (needed by presence/frequency penalties, min_new_tokens and `penalize_prompt=False`). `keys` `[B]`
    (sampling.row_keys) gives XTC its coins; `tokenizer` serves grammars and text DRY breakers.
    """
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a [B, V] float tensor, got {tuple(logits.shape)} {logits.dtype}")
    if bool(torch.isnan(logits).any()):
        raise NaNLogitsError("logits contain NaN; refusing to transform or sample them")
    b, v = logits.shape
    rows = _rows(b, order, params)
    chain = LogitsChain.from_rows(rows, vocab_size=v, eos_token_id=eos_token_id, device=logits.device,
                                  dtype=logits.dtype, tokenizer=tokenizer)
    state = _state(chain.names, rows, logits, input_ids, attention_mask, prompt_length)
    state.keys = keys
    out = chain(logits, state)
    return (out, chain.names) if return_chain else out


def _rows(b: int, order, params: dict) -> list[SamplingParams]:
    extra_names = user_params()
    per_row: list[dict] = [{} for _ in range(b)]
    extras: list[dict] = [{} for _ in range(b)]
    for name, value in params.items():
        if name not in _ROW_FIELDS and name not in extra_names:
            raise TypeError(did_you_mean("process_logits parameter", name, sorted(_ROW_FIELDS | set(extra_names))))
        for i, val in enumerate(_per_row(name, value, b)):
            # a value HF generate() treats as "not applied" (the table's off values, top_p 1, ...) is skipped
            if val is None or (name in BY_NAME and val in BY_NAME[name].off):
                continue
            (extras if name in extra_names else per_row)[i][name] = val
    order = tuple(order) if not isinstance(order, str) else order
    return [SamplingParams(do_sample=True, order=order, extra=e, **r) for r, e in zip(per_row, extras)]


def _per_row(name: str, value, b: int) -> list:
    """A value for each row: a Python value repeats, a `[B]` tensor splits (a one-shot host read)."""
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.shape[0] != b:
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected a number or a [{b}] tensor")
        return value.tolist()
    if name == "logit_bias" and isinstance(value, dict):
        value = tuple(value.items())
    if name in ("bad_words_ids", "sequence_bias", "dry_sequence_breakers") and value is not None:
        value = tuple(value)
    return [value] * b


def _state(names, rows, logits, input_ids, attention_mask, prompt_length) -> DecodeState:
    needs_ids = {"repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram_size", "dry",
                 "sequence_bias", "prefix_allowed_tokens_fn", "watermark"}
    used = needs_ids.intersection(names)
    if used and input_ids is None:
        raise ValueError(f"{sorted(used)[0]} needs input_ids (the tokens so far)")
    needs_len = [n for n in _NEEDS_PROMPT_LENGTH if n in names]
    if "repetition_penalty" in names and any(not r.penalize_prompt for r in rows):
        needs_len.append("penalize_prompt=False")
    if needs_len and prompt_length is None:
        raise ValueError(f"{needs_len[0]} needs prompt_length= (how many leading input_ids are prompt)")
    if input_ids is None:
        input_ids = torch.zeros(logits.shape[0], 0, dtype=torch.long, device=logits.device)
    if input_ids.dim() != 2 or input_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} must be [B, T] with B = {logits.shape[0]}")
    input_ids = input_ids.to(logits.device)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(logits.device)
    width = input_ids.shape[1] if prompt_length is None else int(prompt_length)
    if not 0 <= width <= input_ids.shape[1]:
        raise ValueError(f"prompt_length must be in [0, {input_ids.shape[1]}], got {prompt_length}")
    return DecodeState(input_ids, mask, width, input_ids.shape[1] - width)
