"""Grammar-constrained decoding through llguidance: JSON schema, regex or Lark (EBNF) per row.

Each constrained row has its own `LLMatcher`; every step the matcher writes the row's allowed-token bitmask
(the host work: llguidance computes it in Rust, typically well under a millisecond), the bitmask becomes a
`-inf` mask on the device (one host-to-device copy), and after the draw `update(tokens)` feeds each row its
token (one device-to-host read of the `[B]` tokens: a sync per step, only in batches with a grammar). When a
row's grammar is complete only EOS stays allowed. As a transform in the chain the mask composes with every
sampler; rows without a grammar are untouched.

Why llguidance: one small wheel with no dependencies (xgrammar pulls in triton and a TVM runtime), the same
engine vLLM and SGLang offer, Lark grammars as well as JSON schema and regex, and errors returned as text.
"""

from __future__ import annotations

import json

import torch
from torch import Tensor

from decodebench.decoding.params.checks import fail
from decodebench.decoding.transforms.filters import NEG_INF
from decodebench.decoding.transforms.binding import builtin
from decodebench.decoding.transforms.registry import PackContext, StatefulStep, Step

_TOKENIZERS: dict[tuple[int, int], object] = {}


def to_llguidance(kind: str, body: str) -> str:
    """A `(kind, text)` grammar (params.check_grammar's form) as llguidance grammar text."""
    from llguidance import LLMatcher

    if kind == "json_schema":
        return LLMatcher.grammar_from_json_schema(json.loads(body))
    if kind == "regex":
        return LLMatcher.grammar_from_regex(body)
    return LLMatcher.grammar_from_lark(body)


def compile_error(kind: str, body: str) -> str:
    """llguidance's message for a grammar that does not compile, on one line; '' when it compiles."""
    from llguidance import LLMatcher

    try:
        msg = LLMatcher.validate_grammar(to_llguidance(kind, body))
    except (ValueError, RuntimeError) as e:
        msg = str(e)
    return " ".join(msg.split())


def _ll_tokenizer(tokenizer, vocab_size: int):
    key = (id(tokenizer), vocab_size)
    if key not in _TOKENIZERS:
        import llguidance.hf

        _TOKENIZERS[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
    return _TOKENIZERS[key]


def apply_bitmask(logits: Tensor, bitmask: Tensor, rows: Tensor) -> Tensor:
    """`-inf` where bit `v % 32` of word `v // 32` of a row's int32 `bitmask` `[R, ceil(V / 32)]` is 0, for
    the rows `rows` `[R]`; the other rows unchanged."""
    v = logits.shape[-1]
    bits = torch.arange(32, dtype=torch.int32, device=logits.device)
    allowed = ((bitmask.to(logits.device)[:, :, None] >> bits) & 1).reshape(bitmask.shape[0], -1)[:, :v] != 0
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[rows] = allowed
    return torch.where(keep, logits, NEG_INF)


class GrammarStep(StatefulStep):
    """One llguidance matcher per constrained row (None for the others)."""

    def __init__(self, ctx: PackContext, on: list[bool]) -> None:
        from llguidance import LLMatcher

        if ctx.tokenizer is None:
            raise ValueError("grammar needs the tokenizer: LogitsChain.from_rows(tokenizer=...)")
        tok = _ll_tokenizer(ctx.tokenizer, ctx.vocab_size)
        self.vocab_size = ctx.vocab_size
        self.matchers: list = []
        for r, o in zip(ctx.rows, on):
            if not o:
                self.matchers.append(None)
                continue
            m = LLMatcher(tok, to_llguidance(*r.grammar), log_level=0)
            if m.is_error():
                raise ValueError("grammar does not compile: " + " ".join(m.get_error().split()))
            self.matchers.append(m)
        self._rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self._index = torch.tensor(self._rows, dtype=torch.long, device=ctx.device)
        self._mask = torch.zeros(len(self._rows), (ctx.vocab_size + 31) // 32, dtype=torch.int32)

    def __call__(self, logits: Tensor, tables) -> Tensor:
        for j, i in enumerate(self._rows):  # host: each matcher fills its row of the bitmask
            m = self.matchers[i]
            row = self._mask[j]
            m.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
        return apply_bitmask(logits, self._mask, self._index.to(logits.device))

    def update(self, tokens: Tensor) -> None:
        toks = tokens.tolist()  # the one device-to-host read per step
        for i in self._rows:
            m = self.matchers[i]
            if not m.is_stopped():
                m.consume_token(int(toks[i]))

    def adopt(self, old: "GrammarStep", index: list[int | None]) -> None:
        # a row may be selected twice (beams): each copy gets its own matcher; new rows keep theirs
        seen: set[int] = set()
        for j, i in enumerate(index):
            if i is None:
                continue
            m = old.matchers[i]
            self.matchers[j] = None if m is None else (m.deep_copy() if i in seen else m)
            seen.add(i)


@builtin("grammar", apply_bitmask)
def _grammar(ctx: PackContext, on: list[bool]) -> Step:
    return GrammarStep(ctx, on)


GRAMMAR_KINDS = ("json_schema", "regex", "lark")


def check_grammar(grammar):
    """`{"json_schema": <dict or JSON text>}`, `{"regex": "..."}` or `{"lark": "..."}` (EBNF in Lark syntax).

    The `grammar` row's check. Returns `(kind, text)`, after llguidance has compiled it (without a tokenizer:
    errors before any model loads) (its message, on one line, if it does not).
    """
    if isinstance(grammar, (tuple, list)) and len(grammar) == 2 and grammar[0] in GRAMMAR_KINDS:
        kind, body = grammar
    elif isinstance(grammar, dict) and len(grammar) == 1 and next(iter(grammar)) in GRAMMAR_KINDS:
        kind, body = next(iter(grammar.items()))
    else:
        fail("grammar", "{json_schema: ...}, {regex: ...} or {lark: ...}", grammar)
    if kind == "json_schema":
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except json.JSONDecodeError as e:
                raise ValueError(f"grammar.json_schema is not valid JSON: {e}") from None
        if not isinstance(body, (dict, bool)):
            fail("grammar.json_schema", "a JSON object", body)
        body = json.dumps(body, sort_keys=True)
    elif not isinstance(body, str) or not body:
        fail(f"grammar.{kind}", "a non-empty string", body)
    from decodebench.decoding.transforms.grammar import compile_error  # llguidance compiles without a tokenizer: errors before any model loads

    err = compile_error(kind, body)
    if err:
        raise ValueError(f"grammar.{kind} does not compile: {err}")
    return (kind, body)
