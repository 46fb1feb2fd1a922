"""decodebench's decoding library: pure batched logits transforms, per-row settings, seeded sampling.

Usable on any logits tensor, with no model, Hydra or W&B::

    import torch
    from decodebench.decoding import process_logits, sample, row_keys

    logits = torch.randn(4, 32000)                                   # [B, V]
    x = process_logits(logits, temperature=0.7, top_k=50, top_p=0.9)  # HF's order and arithmetic
    tokens = sample(x, row_keys(0, ["a", "b", "c", "d"], [0] * 4), step=0, do_sample=True)  # [B]

The engine packs per-request `SamplingParams` once into a `LogitsChain` (transforms/chain.py). Sub-packages:
params/ (the parameter table, pure data, and its value checks), transforms/ (the registry and named orders,
the filters, penalties, the llama.cpp family, DRY, top-H, smoothing, sequence bias, p-less, min-k, adaptive-P,
watermarks, grammars and prefix constraints, each with its binder; the chain and `process_logits`), engine/
(requests, KV state, the decode step, the running batch, stopping, streaming, telemetry, `generate`),
search/ (the lazy method registry, strategy specs, one module per search method); and sampling.py (the
seeded noise and the race).
"""

from decodebench.decoding.transforms.api import process_logits
from decodebench.decoding.transforms.chain import DecodeState, LogitsChain, NaNLogitsError
from decodebench.decoding.params.table import SamplingParams
from decodebench.decoding.transforms.penalties import (
    ban_tokens,
    frequency_penalty,
    logit_bias,
    min_new_tokens,
    no_repeat_ngram,
    presence_penalty,
    repetition_penalty,
    token_counts,
)
from decodebench.decoding.transforms.constraints import register_prefix_fn
from decodebench.decoding.transforms.dry import dry
from decodebench.decoding.transforms.filters import epsilon, eta, min_p, temperature, top_k, top_k_top_p, top_p, typical
from decodebench.decoding.transforms.llamacpp import dynatemp, mirostat_v1, mirostat_v2, tail_free, top_n_sigma, xtc
from decodebench.decoding.transforms.cfg import cfg_combine
from decodebench.decoding.transforms.sequence_bias import sequence_bias
from decodebench.decoding.transforms.smoothing import smoothing
from decodebench.decoding.transforms.top_h import top_h
from decodebench.decoding.transforms.p_less import p_less, p_less_norm
from decodebench.decoding.transforms.min_k import min_k
from decodebench.decoding.transforms.adaptive_p import adaptive_p, adapted_target
from decodebench.decoding.sampling import exponential_noise, row_keys, row_uniform, sample, uniform_bits
from decodebench.decoding.search.methods import register_search
from decodebench.decoding.transforms.registry import ORDERS, TRANSFORMS, StatefulStep, TransformSpec, register_transform, resolve_order

__all__ = [
    "process_logits", "SamplingParams", "LogitsChain", "DecodeState", "NaNLogitsError",
    "sample", "row_keys", "exponential_noise", "uniform_bits",
    "register_transform", "TRANSFORMS", "TransformSpec", "ORDERS", "resolve_order",
    "temperature", "top_k", "top_p", "top_k_top_p", "min_p", "typical", "epsilon", "eta",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "no_repeat_ngram", "min_new_tokens",
    "logit_bias", "ban_tokens", "token_counts", "row_uniform", "StatefulStep", "register_prefix_fn",
    "top_h", "top_n_sigma", "tail_free", "xtc", "dynatemp", "mirostat_v1", "mirostat_v2", "smoothing", "dry",
    "sequence_bias", "cfg_combine", "register_search",
    "p_less", "p_less_norm", "min_k", "adaptive_p", "adapted_target",
]

# the engine's face: generate requests with a model (the README's library example)
from decodebench.decoding.engine.driver import Request, generate  # noqa: E402
from decodebench.decoding.search.spec import build_strategy  # noqa: E402

__all__ += ["generate", "Request", "build_strategy"]
