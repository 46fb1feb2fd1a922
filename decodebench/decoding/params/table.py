"""The one table of sampling parameters, and `SamplingParams`, the frozen per-request dataclass built from it.

Every sampling parameter is one `Param` row in `PARAMS`: name, type, range, default, the values that mean
"off", whether it is a warper (sampled rows only, like HF's warpers) or a processor, whether a sweep may
grid it, and the hint its error message carries. From the table come `SamplingParams` (its fields and range
checks), the Hydra `StrategyConfig` (config.py), the off values `process_logits` skips, each built-in
transform's `is_on` test (transforms/binding.py), the strategy keys `build_strategy` accepts, and the sweep's
sampling-only set. Adding a sampler is one row here plus its function and binder in one module of transforms/.

`None` means "not set". Values that HF `generate()` treats as off are off here too (top_k 0, top_p 1.0,
repetition_penalty 1.0, ...), so they never appear in a chain's resolved names. With `do_sample=False` a row
is greedy and the warpers (and user transforms registered as warpers) are not applied to it, as in HF;
processors (penalties, bans, biases, constraints, watermarks) still are.

Parameters of user transforms (see `transforms/registry.py`, `register_transform`) go in `extra`, a tuple of
`(name, value)` pairs; a dict is accepted and stored sorted, so the dataclass stays hashable.

Example::

    >>> SamplingParams(do_sample=True, temperature=0.7, top_p=0.9).greedy
    False
    >>> SamplingParams(top_p=1.5)
    Traceback (most recent call last):
    ...
    ValueError: top_p must be in (0, 1], got 1.5
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import decodebench.decoding.params.checks as checks
from decodebench.decoding.params.checks import fail, check_integer, check_number

INF = math.inf


@dataclass(frozen=True)
class Param:
    """One sampling parameter. `kind`: "float", "int", "bool", "str" or "value" (checked by `check`).

    `off`: values that leave the transform off (None always does). `switch`: setting this parameter turns
    its `transform` on (secondary parameters such as `xtc_threshold` only tune it). `warper`: sampled rows
    only. `sweep`: a sweep may grid it. `config_type`: the Hydra annotation, when not derived from `kind`.
    """

    name: str
    kind: str
    default: Any = None
    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    hi_open: bool = False
    hint: str = ""
    off: tuple = ()
    transform: str | None = None
    switch: bool = True
    warper: bool = True
    sweep: bool = True
    choices: tuple = ()
    # normalise a "value" parameter (raises ValueError); "module:function" names a check that consults a
    # registry, imported when a value first needs it (the table imports no registry)
    check: Callable[[Any], Any] | str | None = None
    config_type: Any = None
    on: Callable[[Any], bool] | None = None  # "is this value on?" when `off` cannot say it

    def is_set(self, value) -> bool:
        """Does this value turn the parameter's transform on?"""
        if value is None or value in self.off:
            return False
        return self.on(value) if self.on is not None else True

    def validate(self, value):
        """The checked (and normalised) value; ValueError with one line naming the parameter."""
        if value is None:
            return None
        if self.kind == "float":
            check_number(self.name, value, self.lo, self.hi, self.lo_open, self.hi_open, self.hint)
        elif self.kind == "int":
            check_integer(self.name, value, int(self.lo), self.hint, self.choices)
        elif self.kind == "bool" and not isinstance(value, bool):
            fail(self.name, "True or False", value)
        elif self.kind == "str":
            if not isinstance(value, str):
                fail(self.name, "a string" + self.hint, value)
            if self.choices and value not in self.choices:
                fail(self.name, "one of " + ", ".join(self.choices), value)
        if self.check is None:
            return value
        return (named_check(self.check) if isinstance(self.check, str) else self.check)(value)


@functools.lru_cache(maxsize=None)
def named_check(path: str) -> Callable[[Any], Any]:
    """The function a row names as "module:function" (a check that lives next to its registry)."""
    module, _, fn = path.partition(":")
    return getattr(importlib.import_module(module), fn)


def _f(name, lo=0.0, hi=INF, lo_open=False, hi_open=True, **kw) -> Param:
    return Param(name, "float", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, **kw)


def _i(name, lo=0, **kw) -> Param:
    return Param(name, "int", lo=lo, **kw)


def _between(lo: float, hi: float) -> Callable[[float], bool]:
    return lambda v: lo < v < hi


# The table. Row order is the order of SamplingParams' and StrategyConfig's fields.
PARAMS: tuple[Param, ...] = (
    Param("do_sample", "bool", default=False, transform=None, switch=False, sweep=True),
    # --- warpers (HF's and vLLM's)
    _f("temperature", hint=" (0 = greedy)", off=(1.0,), transform="temperature"),
    _i("top_k", hint=" (0 = off)", off=(0,), transform="top_k"),
    _f("top_p", lo_open=True, hi=1.0, hi_open=False, off=(1.0,), transform="top_p"),
    _f("min_p", hi=1.0, hi_open=False, transform="min_p"),
    _f("typical_p", hi=1.0, lo_open=True, hint="; use None to turn it off", off=(1.0,), transform="typical_p"),
    _f("epsilon_cutoff", hi=1.0, lo_open=True, hint="; use None to turn it off", off=(0.0,), transform="epsilon_cutoff",
       on=_between(0, 1)),
    _f("eta_cutoff", hi=1.0, lo_open=True, hint="; use None to turn it off", off=(0.0,), transform="eta_cutoff",
       on=_between(0, 1)),
    _f("top_h", hi=1.0, lo_open=True, hi_open=False, transform="top_h"),
    # --- llama.cpp's samplers
    _f("top_n_sigma", hint=" (0 = off)", off=(0.0,), transform="top_n_sigma"),
    _f("tfs_z", hi=1.0, lo_open=True, hi_open=False, hint=" (1 = off)", off=(1.0,), transform="tfs_z"),
    _f("xtc_probability", hi=1.0, hi_open=False, hint=" (0 = off)", off=(0.0,), transform="xtc"),
    _f("xtc_threshold", default=0.1, hi=1.0, hi_open=False, hint=" (above 0.5 XTC never fires)",
       transform="xtc", switch=False),
    _f("dynatemp_range", hint=" (0 = plain temperature)", off=(0.0,), transform="dynatemp"),
    _f("dynatemp_exponent", default=1.0, transform="dynatemp", switch=False),
    _i("mirostat", hint=" (0 = off, 1 = v1, 2 = v2)", off=(0,), choices=(0, 1, 2), transform="mirostat"),
    _f("mirostat_tau", default=5.0, lo_open=True, transform="mirostat", switch=False),
    _f("mirostat_eta", default=0.1, transform="mirostat", switch=False),
    # --- text-generation-webui's quadratic sampling
    _f("smoothing_factor", hint=" (0 = off)", off=(0.0,), transform="smoothing_factor"),
    _f("smoothing_curve", default=1.0, lo=1.0, transform="smoothing_factor", switch=False),
    # --- 2025-2026: p-less (Tan et al., ICLR 2026), min-k (arXiv 2604.11012), adaptive-P (llama.cpp PR 17927)
    Param("p_less", "value", default=False, off=(False,), check=checks.no_threshold("p_less"), transform="p_less",
          sweep=False, config_type=Any),
    Param("p_less_norm", "value", default=False, off=(False,), check=checks.no_threshold("p_less_norm"),
          transform="p_less_norm", sweep=False, config_type=Any),
    Param("min_k", "bool", default=False, off=(False,), transform="min_k", sweep=False),
    _f("min_k_tau", default=3.0, hint=" (the flat-row fallback keeps floor(tau / logit range) tokens)",
       transform="min_k", switch=False),
    _f("adaptive_target", lo=-1.0, hi=1.0, hi_open=False, hint=" (-1 = off)", off=(-1.0,), transform="adaptive_p",
       on=lambda v: v >= 0),
    _f("adaptive_decay", default=0.9, hi=0.99, hi_open=False, transform="adaptive_p", switch=False),
    _i("min_tokens_to_keep", lo=1, default=1, switch=False),
    # --- processors: penalties, bans, biases (also on greedy rows)
    _f("repetition_penalty", lo_open=True, hint=" (1 = off)", off=(1.0,), transform="repetition_penalty",
       warper=False),
    Param("penalize_prompt", "bool", default=True, transform="repetition_penalty", switch=False, warper=False),
    _f("presence_penalty", off=(0.0,), transform="presence_penalty", warper=False),
    _f("frequency_penalty", off=(0.0,), transform="frequency_penalty", warper=False),
    _f("dry_multiplier", hint=" (0 = off)", off=(0.0,), transform="dry", warper=False),
    _f("dry_base", default=1.75, lo=1.0, transform="dry", switch=False, warper=False),
    _i("dry_allowed_length", default=2, lo=0, transform="dry", switch=False, warper=False),
    _i("dry_penalty_last_n", default=-1, lo=-1, hint=" (-1 = the whole context, 0 = off)", transform="dry",
       switch=False, warper=False),
    Param("dry_sequence_breakers", "value", default=checks.DRY_BREAKERS, check=checks.check_breakers, transform="dry",
          switch=False, warper=False, sweep=False, config_type=Optional[List[Any]]),
    _i("no_repeat_ngram_size", lo=1, off=(0,), transform="no_repeat_ngram_size", warper=False),
    _i("min_new_tokens", off=(0,), transform="min_new_tokens", warper=False),
    Param("logit_bias", "value", check=checks.check_bias, transform="logit_bias", warper=False, sweep=False,
          config_type=Optional[Dict[int, float]], on=bool),
    Param("sequence_bias", "value", check=checks.check_sequence_bias, transform="sequence_bias", warper=False,
          sweep=False, config_type=Optional[List[Any]], on=bool),
    Param("bad_words_ids", "value", check=checks.check_bans, transform="bad_words_ids", warper=False, sweep=False,
          config_type=Optional[List[Any]], on=bool),
    # --- constraints and watermarks
    Param("grammar", "value", check="decodebench.decoding.transforms.grammar:check_grammar", transform="grammar", warper=False, sweep=False,
          config_type=Optional[Any]),
    Param("prefix_allowed_tokens_fn", "str", hint=" (a name registered with register_prefix_fn)",
          check="decodebench.decoding.transforms.constraints:check_prefix_fn", transform="prefix_allowed_tokens_fn", warper=False, sweep=False),
    Param("watermark", "bool", default=False, off=(False,), transform="watermark", warper=False),
    _f("watermark_gamma", default=0.25, lo_open=True, hi=1.0, transform="watermark", switch=False, warper=False),
    _f("watermark_delta", default=2.0, transform="watermark", switch=False, warper=False),
    Param("watermark_seeding_scheme", "str", default="lefthash", choices=("lefthash", "selfhash"),
          transform="watermark", switch=False, warper=False),
    _i("watermark_context_width", default=1, lo=1, transform="watermark", switch=False, warper=False),
    _i("watermark_hashing_key", default=15485863, lo=1, transform="watermark", switch=False, warper=False),
    # --- classifier-free guidance: the running batch's (each row's unconditional mirror in the same forward)
    _f("guidance_scale", hint=" (1 = off)", off=(1.0,), transform=None, warper=False),
    Param("negative_prompt", "str", transform=None, switch=False, warper=False, sweep=False),
    # --- how the chain runs
    Param("order", "value", default="hf", check="decodebench.decoding.transforms.registry:check_order", switch=False, config_type=Any),
    Param("extra", "value", default=(), check=checks.check_extra, switch=False, sweep=False,
          config_type=Dict[str, float]),
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
# warpers: no effect on rows with do_sample=false (the sweep refuses to grid them on a greedy strategy)
SAMPLING_ONLY: tuple[str, ...] = tuple(p.name for p in PARAMS if p.warper and p.transform is not None)


def transform_params(transform: str) -> tuple[Param, ...]:
    return tuple(p for p in PARAMS if p.transform == transform)


def asks_for(transform: str) -> Callable[[Any], bool]:
    """`row -> bool`: does the row set a switch parameter of `transform` to an on value?"""
    switches = [p for p in PARAMS if p.transform == transform and p.switch]
    if not switches:
        raise KeyError(f"no parameter switches transform {transform!r} on")
    return lambda row: any(p.is_set(getattr(row, p.name)) for p in switches)


def off_value(name: str):
    """The value a disabled row holds for `name` (None when only None is off)."""
    p = BY_NAME[name]
    return p.off[0] if p.off else None


def _post_init(self) -> None:
    for p in PARAMS:
        object.__setattr__(self, p.name, p.validate(getattr(self, p.name)))  # normalise lists -> tuples
    if BY_NAME["adaptive_target"].is_set(self.adaptive_target) and BY_NAME["mirostat"].is_set(self.mirostat):
        raise ValueError("adaptive_target: adaptive-P and mirostat both pick the token; set adaptive_target=-1 "
                         "or mirostat=0")


def _replace(self, **changes) -> "SamplingParams":
    """A copy with some fields changed (validated again)."""
    return SamplingParams(**{**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **changes})


def _greedy(self) -> bool:
    """True when the row takes the argmax: no sampling, or temperature 0."""
    return not self.do_sample or self.temperature == 0


SamplingParams = dataclasses.make_dataclass(
    "SamplingParams",
    [(p.name, Any, dataclasses.field(default=p.default)) for p in PARAMS],
    namespace={"__post_init__": _post_init, "replace": _replace, "greedy": property(_greedy),
               "__doc__": "One request's settings, one field per row of `PARAMS`; every field is range-checked "
                          "on creation. See the module docstring.",
               "__module__": __name__},
    frozen=True,
)
