"""One request's decoding settings: a frozen, validated dataclass with GenerationConfig names.

`None` means "transform not applied". Values that HF `generate()` treats as off are off here too
(top_k 0, top_p 1.0, repetition_penalty 1.0, ...), so they never appear in a chain's resolved names.
With `do_sample=False` a row is greedy and the sampling-only transforms (temperature, top_k, top_p,
min_p, typical_p, epsilon_cutoff, eta_cutoff, and user transforms registered as warpers) are not applied
to it, as in HF; penalties, bans and biases still are.

Parameters of user transforms (see `transforms.register_transform`) go in `extra`, a tuple of
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

import math
from dataclasses import dataclass, fields
from numbers import Integral, Real


def _fail(name: str, rule: str, value) -> None:
    raise ValueError(f"{name} must be {rule}, got {value!r}")


def _number(name: str, value, lo: float, hi: float, lo_open: bool, hi_open: bool, hint: str = "") -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        his = "inf" if math.isinf(hi) else f"{hi:g}"
        _fail(name, f"in {lb}{lo:g}, {his}{rb}{hint}", value)


def _integer(name: str, value, lo: int, hint: str = "") -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < lo:
        _fail(name, f"an integer >= {lo}{hint}", value)


# field -> (low, high, low open, high open, hint); every float field of SamplingParams is checked here
_FLOAT_RANGES = {
    "temperature": (0.0, math.inf, False, True, " (0 = greedy)"),
    "top_p": (0.0, 1.0, True, False, ""),
    "min_p": (0.0, 1.0, False, False, ""),
    "typical_p": (0.0, 1.0, True, True, "; use None to turn it off"),
    "epsilon_cutoff": (0.0, 1.0, True, True, "; use None to turn it off"),
    "eta_cutoff": (0.0, 1.0, True, True, "; use None to turn it off"),
    "repetition_penalty": (0.0, math.inf, True, True, " (1 = off)"),
    "presence_penalty": (0.0, math.inf, False, True, ""),
    "frequency_penalty": (0.0, math.inf, False, True, ""),
}
_INT_RANGES = {"top_k": (0, " (0 = off)"), "no_repeat_ngram_size": (1, ""), "min_new_tokens": (0, "")}


@dataclass(frozen=True)
class SamplingParams:
    """One request's settings; see the module docstring. Every field is range-checked on creation."""

    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    epsilon_cutoff: float | None = None
    eta_cutoff: float | None = None
    repetition_penalty: float | None = None
    penalize_prompt: bool = True  # repetition penalty counts prompt tokens (HF); False = generated only
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    min_new_tokens: int | None = None
    logit_bias: tuple[tuple[int, float], ...] | None = None
    bad_words_ids: tuple[int, ...] | None = None  # single-token bans; an EOS id here is ignored, as in HF
    min_tokens_to_keep: int = 1
    order: str | tuple[str, ...] = "hf"
    extra: tuple[tuple[str, float], ...] = ()  # parameters of user transforms, by name

    def __post_init__(self) -> None:
        for name in ("do_sample", "penalize_prompt"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "True or False", getattr(self, name))
        for name, (lo, hi, lo_open, hi_open, hint) in _FLOAT_RANGES.items():
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), lo, hi, lo_open, hi_open, hint)
        for name, (lo, hint) in _INT_RANGES.items():
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), lo, hint)
        _integer("min_tokens_to_keep", self.min_tokens_to_keep, 1)
        self._set("logit_bias", _check_bias(self.logit_bias))
        self._set("bad_words_ids", _check_bans(self.bad_words_ids))
        self._set("order", _check_order(self.order))
        self._set("extra", _check_extra(self.extra))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen field (a dict or list -> tuple)

    def replace(self, **changes) -> "SamplingParams":
        """A copy with some fields changed (validated again)."""
        return SamplingParams(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    @property
    def greedy(self) -> bool:
        """True when the row takes the argmax: no sampling, or temperature 0."""
        return not self.do_sample or self.temperature == 0


def _check_bias(bias):
    if bias is None:
        return None
    items = bias.items() if isinstance(bias, dict) else bias
    out = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            _fail("logit_bias", "a dict {token_id: bias} or (token_id, bias) pairs", bias)
        tok, val = pair
        _integer("logit_bias token id", tok, 0)
        _number("logit_bias value", val, -math.inf, math.inf, True, True)
        out.append((int(tok), float(val)))
    if len({t for t, _ in out}) != len(out):
        _fail("logit_bias", "free of repeated token ids", bias)
    return tuple(sorted(out))


def _check_bans(bans):
    if bans is None:
        return None
    if isinstance(bans, (str, bytes)) or not hasattr(bans, "__iter__"):
        _fail("bad_words_ids", "a sequence of token ids", bans)
    out = []
    for tok in bans:
        if isinstance(tok, (list, tuple)):  # HF's list-of-lists form, single-token entries only
            if len(tok) != 1:
                _fail("bad_words_ids", "single token ids (multi-token bans are not supported)", bans)
            tok = tok[0]
        _integer("bad_words_ids entry", tok, 0)
        out.append(int(tok))
    return tuple(out)


def _check_order(order):
    from .transforms import resolve_order  # late: the registry module imports nothing from here

    if isinstance(order, list):
        order = tuple(order)
    if not isinstance(order, (str, tuple)):
        _fail("order", "a named order ('hf', 'vllm', 'llamacpp') or a sequence of transform names", order)
    resolve_order(order)  # unknown names: one line, with "did you mean"
    return order


def _check_extra(extra):
    items = extra.items() if isinstance(extra, dict) else extra
    out = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            _fail("extra", "a dict {param_name: value} or (name, value) pairs", extra)
        name, val = pair
        _number(f"extra[{name!r}]", val, -math.inf, math.inf, True, True)
        out.append((name, float(val)))
    if len({n for n, _ in out}) != len(out):
        _fail("extra", "free of repeated names", extra)
    return tuple(sorted(out))
