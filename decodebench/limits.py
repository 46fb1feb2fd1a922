"""Limits that depend on the model, checked from its config before its weights load.

The model's config says how many positions it has and how large a KV cache row is; the tokenizer says how
long the prompts are. So a prompt plus `max_new_tokens` that does not fit the model, or a KV cache that does
not fit the machine, is a one-line ConfigError (exit 2) instead of a silent overflow, or a traceback after a
long load. Nothing here runs code from the model's files: configs are read as JSON or GGUF metadata.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from decodebench import models
from decodebench.config import ConfigError

log = logging.getLogger("decodebench")

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_POSITIONS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_HEADS = ("num_attention_heads", "n_head")
_HIDDEN = ("hidden_size", "n_embd", "d_model")


@dataclass(frozen=True)
class Shape:
    """What the checks need from a model's config; None where the config does not say."""

    max_positions: Optional[int]
    layers: Optional[int] = None
    kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    vocab: Optional[int] = None  # rows of the output layer: every token id must be below it

    def kv_bytes_per_position(self, dtype: str) -> Optional[int]:
        if None in (self.layers, self.kv_heads, self.head_dim):
            return None
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES.get(dtype, 4)  # K and V


def _first(d: dict, keys: tuple) -> Optional[int]:
    for k in keys:
        if isinstance(d.get(k), int) and not isinstance(d.get(k), bool):
            return d[k]
    return None


def shape_from_json(d: dict) -> Shape:
    d = d.get("text_config") or d  # multimodal configs keep the language model's settings there
    heads, hidden = _first(d, _HEADS), _first(d, _HIDDEN)
    kv = _first(d, ("num_key_value_heads",)) or (1 if d.get("multi_query") else heads)
    head_dim = _first(d, ("head_dim",)) or (hidden // heads if hidden and heads else None)
    return Shape(_first(d, _POSITIONS), _first(d, _LAYERS), kv, head_dim, _first(d, ("vocab_size", "n_vocab")))


def _gguf_shape(path: Path) -> Shape:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def val(key):
        f = fields.get(key)
        return None if f is None else f.parts[f.data[0]]

    arch = bytes(val("general.architecture")).decode()

    def num(key):
        v = val(f"{arch}.{key}")
        return None if v is None else int(v[0])

    heads, hidden = num("attention.head_count"), num("embedding_length")
    tokens = fields.get("tokenizer.ggml.tokens")
    vocab = num("vocab_size") or (len(tokens.data) if tokens else None)
    return Shape(num("context_length"), num("block_count"), num("attention.head_count_kv") or heads,
                 hidden // heads if hidden and heads else None, vocab)


def model_shape(mcfg) -> Optional[Shape]:
    """The model's positions and KV geometry, from its config file only; None when it cannot be read."""
    kind, path = models.resolve_source(mcfg)
    try:
        if kind == "tiny":
            return shape_from_json(models.tiny_config().to_dict())
        if kind in ("embedded", "gguf"):
            cached = models._gguf_cache_dir(path) / "config.json"
            return shape_from_json(json.loads(cached.read_text())) if cached.is_file() else _gguf_shape(path)
        if kind == "local":
            return shape_from_json(json.loads((path / "config.json").read_text()))
        from huggingface_hub import hf_hub_download

        f = hf_hub_download(mcfg.name_or_path, "config.json", revision=mcfg.revision,
                            local_files_only=models.hub_offline())
        return shape_from_json(json.loads(Path(f).read_text()))
    except Exception as e:  # noqa: BLE001 - no config, no early check: the load itself will say what is wrong
        log.debug("no model config for the early checks: %s", e)
        return None


def available_bytes(device: str) -> int:
    """Free memory where the KV cache would live: the GPU's free memory, or the host's available RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def fit_prompts(ids: dict[str, list[int]], max_new_tokens: int, shape: Optional[Shape], model_name: str,
                truncate: Optional[str]) -> dict[str, list[int]]:
    """Refuse (or, with dataset.truncate=left, cut from the left) prompts that leave no room for
    `max_new_tokens` in the model's positions; refuse prompts with no tokens."""
    for pid, t in ids.items():
        if not t:
            raise ConfigError(f"dataset.prompt_column: prompt {pid!r} has no tokens; remove it, or set "
                              "dataset.empty_prompts=skip to leave empty prompts out")
    limit = shape.max_positions if shape else None
    if not limit or not ids:
        return ids
    if max_new_tokens >= limit:
        raise ConfigError(f"strategy.max_new_tokens: {max_new_tokens} new tokens leave no room for a prompt in the "
                          f"{limit} positions of model {model_name}; set strategy.max_new_tokens below {limit}")
    room = limit - max_new_tokens
    longest = max(ids, key=lambda k: len(ids[k]))
    if len(ids[longest]) <= room:
        return ids
    if truncate != "left":
        raise ConfigError(
            f"strategy.max_new_tokens: {max_new_tokens} new tokens + the longest prompt ({len(ids[longest])} tokens, "
            f"id {longest!r}) = {len(ids[longest]) + max_new_tokens} > the {limit} positions of model {model_name}; "
            f"lower strategy.max_new_tokens, shorten the prompts, or set dataset.truncate=left to keep the last "
            f"{room} tokens of each prompt")
    cut = sum(len(t) > room for t in ids.values())
    log.warning("dataset.truncate=left: %d of %d prompts cut to their last %d tokens (model %s has %d positions, "
                "%d kept for new tokens)", cut, len(ids), room, model_name, limit, max_new_tokens)
    return {k: t[-room:] for k, t in ids.items()}


# What a beam row holds beside its KV cache and logits (its candidates, sequences, the chain's per-row
# state), measured as peak RSS on the CPU with model=tiny, 1 prompt, 8 new tokens: 250 beams 551 MB, 1000
# beams 679 MB, 4000 beams 1140 MB, so about 155 KB a beam; rounded up.
BEAM_ROW_BYTES = 160_000


def check_kv_memory(rows: int, width: int, shape: Optional[Shape], dtype: str, device: str,
                    available: Optional[int] = None, beams: int = 1) -> Optional[int]:
    """Refuse a KV cache of `rows` x `width` positions that cannot fit in free memory; returns its bytes.
    With `beams` > 1 the rows are beams: their float32 logits and scores (4 vocabulary-sized buffers a row,
    as the engine's batch sizing counts them) are counted too, and the message names strategy.num_beams."""
    per = shape.kv_bytes_per_position(dtype) if shape else None
    if per is None:
        return None
    need = per * rows * width + (rows * (4 * 4 * (shape.vocab or 0) + BEAM_ROW_BYTES) if beams > 1 else 0)
    have = available_bytes(device) if available is None else available
    if need > have and beams > 1:
        raise ConfigError(
            f"strategy.num_beams: {rows} rows ({beams} beams a prompt) x {width} positions need {need} bytes "
            f"({_human(need)}) of KV cache and logits, but {device} has {have} bytes ({_human(have)}) free; lower "
            f"strategy.num_beams, or set batch_size (1 runs one prompt's beams at a time)")
    if need > have:
        raise ConfigError(
            f"strategy.max_new_tokens: the KV cache for {rows} rows x {width} positions needs {need} bytes "
            f"({_human(need)}), but {device} has {have} bytes ({_human(have)}) free; lower strategy.max_new_tokens "
            f"or batch_size")
    return need


def check(run, mcfg, ids: dict[str, list[int]], max_new_tokens: int, rows: Optional[int], device: str,
          dtype: str, specs: tuple = (), per_prompt: int = 1) -> dict[str, list[int]]:
    """All model-dependent checks of one run or sweep; returns the prompt ids to feed (maybe cut).
    `rows`: KV cache rows of a running batch; None (batch_size=auto) leaves the memory to the engine.
    `specs`: the strategy specs to run (their token ids and top_k against the vocabulary); `per_prompt`:
    output rows a prompt makes (num_return_sequences, times a sweep's points). `run`: the RunSpec
    (decodebench/specs.py) whose dataset, batch size and strategy these are."""
    shape = model_shape(mcfg)
    check_vocab([s.params for s in specs], shape, str(mcfg.name_or_path))
    ids = fit_prompts(ids, max_new_tokens, shape, str(mcfg.name_or_path), run.dataset.truncate)
    width = max((len(t) for t in ids.values()), default=0) + max_new_tokens
    check_rows_memory(len(ids), per_prompt, width)
    if rows is not None:
        if str(run.batch_size) == "auto":  # rows is one prompt's beams; the engine's auto batch holds up to
            from decodebench.decoding.engine import CPU_AUTO_BATCH, CUDA_AUTO_CAP  # its cap of prompts

            rows *= min(len(ids), CUDA_AUTO_CAP if device.startswith("cuda") else CPU_AUTO_BATCH)
        beams = max([int(run.strategy.get("num_beams") or 1)] + [int(s.search.get("num_beams") or 1) for s in specs])
        check_kv_memory(rows, width, shape, dtype, device, beams=beams)
    return ids


def check_vocab(params: list, shape: Optional[Shape], model_name: str) -> None:
    """top_k and every token id in the settings against the model's vocabulary (from its config)."""
    vocab = shape.vocab if shape else None
    if not vocab:
        return
    for p in params:
        if p.top_k is not None and p.top_k > vocab:
            raise ConfigError(f"strategy.top_k: {p.top_k} is more than the {vocab} tokens of model {model_name}; "
                              f"set strategy.top_k to at most {vocab} (0 = off)")
        for key, ids in (("logit_bias", [t for t, _ in p.logit_bias or ()]),
                         ("sequence_bias", [t for seq, _ in p.sequence_bias or () for t in seq]),
                         ("bad_words_ids", [t for b in p.bad_words_ids or ()
                                            for t in (b if isinstance(b, tuple) else (b,))])):
            bad = next((t for t in ids if t >= vocab), None)
            if bad is not None:
                raise ConfigError(f"strategy.{key}: token id {bad} is not in the vocabulary of model {model_name} "
                                  f"(ids 0 to {vocab - 1}); use ids the model's tokenizer gives")


# Host memory one output row holds until its run is scored: its request (a copy of the prompt's ids), the
# record written and read back (ids as Python ints, the texts), and their objects. Measured with
# tracemalloc (tests/test_preemption.py checks the bound holds): about 1.1 KB + 45 B per token.
ROW_BYTES, TOKEN_BYTES = 2048, 96


def check_rows_memory(num_prompts: int, per_prompt: int, width: int, available: Optional[int] = None) -> int:
    """Refuse a run whose rows (num_prompts x per_prompt outputs) cannot be held in host memory."""
    rows = num_prompts * per_prompt
    need = rows * (ROW_BYTES + TOKEN_BYTES * width)
    have = available_bytes("cpu") if available is None else available
    if need > have:
        raise ConfigError(
            f"strategy.num_return_sequences: {rows} rows ({num_prompts} prompts x {per_prompt}) need about "
            f"{_human(need)} of host memory for their requests and records, {_human(have)} is available; lower "
            f"strategy.num_return_sequences or dataset.limit")
    return need
