"""Range checks and normalisers behind the parameter table (table.py): one-line errors naming the key.

The checks that consult a registry (a grammar compiles, an order names registered transforms, a prefix
function is registered) live next to their registry and are named on their rows by module path.

Structured values are normalised to tuples so `SamplingParams` stays hashable: `logit_bias` to sorted
`(token, bias)` pairs, `sequence_bias` to sorted `((tokens...), bias)` pairs, `bad_words_ids` to single ids
(ints) and multi-token sequences (tuples), `dry_sequence_breakers` to strings or token-id tuples, a JSON-schema
`grammar` to `("json_schema", text)`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

# llama.cpp's default DRY sequence breakers (common/common.h)
DRY_BREAKERS = ("\n", ":", "\"", "*")


def fail(name: str, rule: str, value) -> None:
    raise ValueError(f"{name} must be {rule}, got {value!r}")


def no_threshold(name: str):
    """A p-less switch's check: a bool, never a number (p-less derives its threshold from the distribution)."""
    def check(value):
        if not isinstance(value, bool):
            fail(name, "true or false (p-less takes no threshold: it keeps tokens with p >= sum of p^2)", value)
        return value

    return check


def check_number(name: str, value, lo: float, hi: float, lo_open: bool, hi_open: bool, hint: str = "") -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        los = "-inf" if math.isinf(lo) else f"{lo:g}"
        his = "inf" if math.isinf(hi) else f"{hi:g}"
        fail(name, f"in {lb}{los}, {his}{rb}{hint}", value)


INT64_MAX = 2**63 - 1  # what a tensor of token counts or ids can hold


def check_integer(name: str, value, lo: int, hint: str = "", choices: tuple = ()) -> None:
    if isinstance(value, Integral) and not isinstance(value, bool) and value > INT64_MAX:
        fail(name, f"an integer at most {INT64_MAX}{hint}", value)
    if not isinstance(value, Integral) or isinstance(value, bool) or value < lo:
        fail(name, f"an integer >= {lo}{hint}" if not choices else f"one of {', '.join(map(str, choices))}{hint}",
             value)
    if choices and value not in choices:
        fail(name, f"one of {', '.join(map(str, choices))}{hint}", value)


def _token(name: str, tok) -> int:
    check_integer(name, tok, 0)
    return int(tok)


def check_bias(bias):
    items = bias.items() if isinstance(bias, dict) else bias
    out = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            fail("logit_bias", "a dict {token_id: bias} or (token_id, bias) pairs, e.g. {5: 2.0},", bias)
        tok, val = pair
        if not isinstance(tok, Integral) or isinstance(tok, bool) or not 0 <= tok <= INT64_MAX:
            raise ValueError(f"logit_bias: {tok!r} is not a token id (an integer >= 0); write {{token_id: bias}}, "
                             f"e.g. strategy.logit_bias={{5:2.0}}")
        if not isinstance(val, Real) or isinstance(val, bool) or not math.isfinite(val):
            raise ValueError(f"logit_bias: the bias of token {tok} must be a finite number, got {val!r}")
        out.append((int(tok), float(val)))
    if len({t for t, _ in out}) != len(out):
        fail("logit_bias", "free of repeated token ids", bias)
    return tuple(sorted(out))


def check_sequence_bias(bias):
    """HF's form: a list of `[[token ids...], bias]`, or a dict {tuple of ids: bias}."""
    items = bias.items() if isinstance(bias, dict) else bias
    out = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], (tuple, list))
                and len(pair[0]) > 0):
            fail("sequence_bias", "a list of [[token ids...], bias] pairs with non-empty sequences", bias)
        check_number("sequence_bias value", pair[1], -math.inf, math.inf, True, True)
        out.append((tuple(_token("sequence_bias token id", t) for t in pair[0]), float(pair[1])))
    if len({s for s, _ in out}) != len(out):
        fail("sequence_bias", "free of repeated sequences", bias)
    return tuple(sorted(out))


def check_bans(bans):
    if isinstance(bans, (str, bytes)) or not hasattr(bans, "__iter__"):
        fail("bad_words_ids", "a sequence of token ids or of token-id lists", bans)
    out = []
    for entry in bans:
        if isinstance(entry, (list, tuple)):  # HF's list-of-lists form
            if not entry:
                fail("bad_words_ids", "free of empty sequences", bans)
            seq = tuple(_token("bad_words_ids entry", t) for t in entry)
            out.append(seq[0] if len(seq) == 1 else seq)
        else:
            out.append(_token("bad_words_ids entry", entry))
    return tuple(out)


def check_breakers(breakers):
    if isinstance(breakers, (str, bytes)) or not hasattr(breakers, "__iter__"):
        fail("dry_sequence_breakers", "a list of strings or of token-id lists", breakers)
    out = []
    for b in breakers:
        if isinstance(b, str):
            if not b:
                fail("dry_sequence_breakers", "free of empty strings", breakers)
            out.append(b)
        elif isinstance(b, (list, tuple)) and b:
            out.append(tuple(_token("dry_sequence_breakers token id", t) for t in b))
        else:
            fail("dry_sequence_breakers", "a list of strings or of non-empty token-id lists", breakers)
    return tuple(out)


def check_extra(extra):
    items = extra.items() if isinstance(extra, dict) else extra
    out = []
    for pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            fail("extra", "a dict {param_name: value} or (name, value) pairs", extra)
        name, val = pair
        check_number(f"extra[{name!r}]", val, -math.inf, math.inf, True, True)
        out.append((name, float(val)))
    if len({n for n, _ in out}) != len(out):
        fail("extra", "free of repeated names", extra)
    return tuple(sorted(out))
