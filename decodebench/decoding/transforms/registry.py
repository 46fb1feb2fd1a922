"""The transforms registry, the named orders, and `register_transform` for your own transforms.

Every transform a chain can run is a `TransformSpec` in `TRANSFORMS`, registered under the name that
`order` lists use (the GenerationConfig parameter name for the built-ins: "temperature", "top_k",
"top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
"frequency_penalty", "presence_penalty", "no_repeat_ngram_size", "min_new_tokens", "logit_bias",
"bad_words_ids"; and "top_h", "top_n_sigma", "tfs_z", "xtc", "dynatemp", "mirostat", "smoothing_factor",
"dry", "sequence_bias", "grammar", "prefix_allowed_tokens_fn", "watermark", "p_less", "p_less_norm", "min_k",
"adaptive_p").

Your own transform: a pure batched function `[B, V] -> [B, V]` whose parameters arrive as `[B]` tensors
(logits dtype, one value per row, `neutral` for rows that leave it unset)::

    import torch
    from decodebench.decoding import register_transform, SamplingParams, process_logits

    @register_transform("top_a", params=("top_a",), neutral=(0.0,))
    def top_a(logits, top_a):
        # keep tokens with prob >= top_a * max_prob ** 2 (top-a sampling)
        probs = logits.softmax(-1)
        cut = top_a[:, None] * probs.amax(-1, keepdim=True) ** 2
        return logits.masked_fill(probs < cut, float("-inf"))

    SamplingParams(do_sample=True, top_k=50, extra={"top_a": 0.2})   # per request
    process_logits(logits, top_k=50, top_a=0.2)                       # one-shot

A row turns the transform on by setting any of its params. Named orders ("hf", "vllm", "llamacpp") run
user transforms after the built-ins, in registration order; an explicit order list places them anywhere,
e.g. `order=("top_k", "top_a", "temperature")`. `warper=True` (the default) means sampled rows only, like
HF's warpers; `needs_state=True` passes the `DecodeState` as `state=` (prompt + generated ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from decodebench.decoding.params.checks import fail
from decodebench.decoding.params.table import SamplingParams
from decodebench.registry import Registry, did_you_mean

# A packed transform for one batch: (logits, tables) -> logits, where `tables` gives the call's
# DecodeState and shared history tables (see chain.Tables).
Step = Callable[[Tensor, "object"], Tensor]


@dataclass
class PackContext:
    """What a binder sees when a chain packs a batch."""

    rows: Sequence  # Sequence[SamplingParams]
    vocab_size: int
    device: torch.device
    dtype: torch.dtype
    eos_ids: tuple[int, ...]
    support: int | None = None  # at most this many finite logits per row reach top_p (top_k ran first)
    tokenizer: object = None  # a Hugging Face tokenizer: text DRY breakers and grammars need it

    def floats(self, values: Sequence[float]) -> Tensor:
        """A `[B]` float64 column: per-row arithmetic in double, rounded to the logits dtype where HF does."""
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def longs(self, values: Sequence[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)


@dataclass(frozen=True)
class TransformSpec:
    name: str
    fn: Callable[..., Tensor]
    params: tuple[str, ...]
    is_on: Callable[[object], bool]  # does this row (SamplingParams) ask for it?
    bind: Callable[[PackContext, list[bool]], Step]  # pack once, given which rows are on (some are)
    warper: bool = True
    user: bool = False
    neutral: tuple[float, ...] = field(default=())


TRANSFORMS: Registry[TransformSpec] = Registry("logits transform")
_USER_ORDER: list[str] = []  # user transforms in registration order (the Registry keeps no order)

# Sources: HF GenerationMixin._get_logits_processor (transformers 5.x); vLLM v1 Sampler docstring
# (vllm/v1/sample/sampler.py: bad words, min tokens, logit bias, penalties rep/freq/presence,
# temperature, min_p, top_k+top_p); llama.cpp common/common.h default `samplers` with the logit-bias
# sampler that common/sampling.cpp puts first. Transforms an engine lacks sit next to their kin.
ORDERS: dict[str, tuple[str, ...]] = {
    # HF: sequence bias first, then penalties, bans, constraints, warpers (top_h right after temperature);
    # the watermark after every other transform (transformers #34630). Non-HF samplers sit by their kin;
    # mirostat last, since its update reads the distribution the token is drawn from; adaptive-P, the final
    # selector, after it (the two never share a row). min-k before temperature, so its cut reads raw logits.
    "hf": (
        "logit_bias", "sequence_bias", "repetition_penalty", "frequency_penalty", "presence_penalty", "dry",
        "no_repeat_ngram_size", "bad_words_ids", "min_new_tokens", "prefix_allowed_tokens_fn", "grammar",
        "min_k", "temperature", "dynatemp", "smoothing_factor", "top_h", "top_k", "top_p", "min_p",
        "p_less", "p_less_norm", "typical_p",
        "epsilon_cutoff", "eta_cutoff", "top_n_sigma", "tfs_z", "xtc", "watermark", "mirostat", "adaptive_p",
    ),
    # vLLM: the structured-output bitmask before everything, then bans, min tokens, bias, penalties,
    # temperature, min_p, top_k/top_p
    "vllm": (
        "grammar", "bad_words_ids", "min_new_tokens", "logit_bias", "sequence_bias", "prefix_allowed_tokens_fn",
        "repetition_penalty", "frequency_penalty", "presence_penalty", "dry", "no_repeat_ngram_size", "min_k",
        "temperature", "dynatemp", "smoothing_factor", "min_p", "p_less", "p_less_norm", "top_k", "top_p",
        "typical_p", "epsilon_cutoff",
        "eta_cutoff", "top_h", "top_n_sigma", "tfs_z", "xtc", "watermark", "mirostat", "adaptive_p",
    ),
    # llama.cpp's default chain (common/common.h): penalties, dry, top_n_sigma, top_k, (tfs_z, in releases
    # that had it), typical, top_p, min_p, xtc, temperature (temp_ext = dynatemp); mirostat replaces the
    # final draw. Its logit-bias and grammar samplers come first.
    "llamacpp": (
        "logit_bias", "sequence_bias", "bad_words_ids", "min_new_tokens", "prefix_allowed_tokens_fn", "grammar",
        "repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram_size", "dry",
        "top_n_sigma", "min_k", "top_k", "tfs_z", "typical_p", "top_p", "min_p", "p_less", "p_less_norm", "xtc",
        "epsilon_cutoff", "eta_cutoff",
        "top_h", "temperature", "dynatemp", "smoothing_factor", "watermark", "mirostat", "adaptive_p",
    ),
}


# The built-in transforms: name -> the module whose import registers it (its function and binder live there);
# imported on the first lookup that needs it, so this module imports none of them.
_T = "decodebench.decoding.transforms."
BUILTIN_TRANSFORMS: dict[str, str] = {
    **{n: _T + "filter_binders" for n in (
        "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
        "frequency_penalty", "presence_penalty", "no_repeat_ngram_size", "min_new_tokens", "logit_bias",
        "bad_words_ids")},
    **{n: _T + "llamacpp" for n in ("top_n_sigma", "tfs_z", "xtc", "dynatemp", "mirostat")},
    "top_h": _T + "top_h", "smoothing_factor": _T + "smoothing", "sequence_bias": _T + "sequence_bias",
    "dry": _T + "dry", "p_less": _T + "p_less", "p_less_norm": _T + "p_less", "min_k": _T + "min_k",
    "adaptive_p": _T + "adaptive_p", "prefix_allowed_tokens_fn": _T + "constraints", "watermark": _T + "watermark",
    "grammar": _T + "grammar",
}
for _name, _module in BUILTIN_TRANSFORMS.items():
    TRANSFORMS.register_lazy(_name, _module)


class StatefulStep:
    """A packed step with per-row state across steps (mirostat's mu, grammar matchers, ...).

    The loop drives it through the chain: `chain(logits, state)` calls it, `chain.update(tokens)` passes each
    row's sampled token to `update`, and `chain.select(index)` hands the rows' state to the new chain's step
    through `adopt`. State lives in `[B, ...]` tensors or per-row lists, indexed by row.
    """

    def __call__(self, logits: Tensor, tables) -> Tensor:
        raise NotImplementedError

    def update(self, tokens: Tensor) -> None:
        """One sampled token per row `[B]`, after the step that produced it."""

    def adopt(self, old: "StatefulStep", index: list[int | None]) -> None:
        """Row j takes row `index[j]` of `old`'s state; `None`: a new row, which keeps its fresh state."""


def resolve_order(order: str | Sequence[str]) -> list[str]:
    """Transform names in application order: a named order (then user transforms) or a list as given."""
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(did_you_mean("order", order, list(ORDERS)))
        return list(ORDERS[order]) + list(_USER_ORDER)
    names = list(order)
    for name in names:
        if not isinstance(name, str) or name not in TRANSFORMS:
            raise ValueError(TRANSFORMS.unknown_message(str(name)))
    if len(set(names)) != len(names):
        raise ValueError(f"order names a transform twice: {names}")
    return names


def check_order(order):
    from decodebench.decoding.transforms.registry import resolve_order  # late: the registry module imports nothing from here

    if isinstance(order, list):
        order = tuple(order)
    if not isinstance(order, (str, tuple)):
        fail("order", "a named order ('hf', 'vllm', 'llamacpp') or a sequence of transform names", order)
    resolve_order(order)  # unknown names: one line, with "did you mean"
    return order


def user_params() -> dict[str, str]:
    """param name -> user transform name, for every registered user transform."""
    return {p: name for name in _USER_ORDER for p in TRANSFORMS.get(name).params}  # no built-in is imported


def register_transform(
    name: str,
    *,
    params: Sequence[str],
    neutral: Sequence[float] | None = None,
    warper: bool = True,
    needs_state: bool = False,
):
    """Decorator: register `fn(logits, *param_columns[, state=...]) -> logits` under `name`.

    `params` are the names rows set in `SamplingParams.extra` (and `process_logits` keywords); they
    must not clash with SamplingParams fields or other transforms' params. `neutral[i]` is the value
    packed for rows that leave param i unset (default 0.0); it must leave those rows unchanged.
    """
    params = tuple(params)
    neutral = tuple(float(x) for x in (neutral if neutral is not None else [0.0] * len(params)))
    if not params or len(neutral) != len(params):
        raise ValueError(f"transform {name!r}: give at least one param and one neutral value per param")
    taken = set(SamplingParams.__dataclass_fields__) | set(user_params())
    clash = [p for p in params if p in taken]
    if clash:
        raise ValueError(f"transform {name!r}: param names {clash} are already taken")

    def is_on(row) -> bool:
        given = dict(row.extra)
        return any(p in given for p in params) and (row.do_sample or not warper)

    def add(fn):
        def bind(ctx: PackContext, on: list[bool]) -> Step:
            cols = []
            for p, off in zip(params, neutral):
                vals = [dict(r.extra).get(p, off) if o else off for r, o in zip(ctx.rows, on)]
                cols.append(ctx.floats(vals))

            def step(logits: Tensor, tables) -> Tensor:
                args = [c.to(logits.dtype) for c in cols]
                return fn(logits, *args, state=tables.state) if needs_state else fn(logits, *args)

            return step

        TRANSFORMS.register(name, TransformSpec(name, fn, params, is_on, bind, warper, True, neutral))
        _USER_ORDER.append(name)
        return fn

    return add
