"""The registry of search methods, chosen by name (`strategy.method`), and `register_search`.

Each search method is one registered `SearchMethod`: what it runs, how it validates a spec, what it needs and
supports. `sampling` is registered here (the engine's running batch serves it); the built-in methods are
listed by the path of the module that registers them and imported on first lookup (`METHODS.get("beam")`),
so this module imports none of them; a plugin's own method registers with `@register_search`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from decodebench.registry import Registry

METHODS: Registry = Registry("strategy method")


@dataclass(frozen=True)
class SearchMethod:
    """A search method, as the engine, the preflight checks and the sweep see it.

    run:                 `(requests, spec, ctx) -> [Output]` over one batch; None for `unit="row"`
                         methods, which the engine's running batch drives
    validate:            `spec -> None`, a ValueError naming the field on bad settings
    needs_hidden_states: the forward also returns the last hidden states (contrastive search)
    supports_record:     per-step telemetry (`record=[...]`) is available
    unit:                "row" (one token per row per step: continuous batching, any batch split) or
                         "prompt" (a search over a prompt's rows: whole prompts per batch)
    fusable:             sweep points may be generated in the same batches (per-row settings only)
    runtime:             `(model, spec, **runtime_options) -> kvcache.Runtime`: a Runtime of the method's own
                         (logits combined with an amateur's or early layers'); None: the plain one
    check_model:         `(spec, model) -> None`, a ValueError naming the key on settings the loaded model
                         cannot serve (layers it does not have, a second model with another vocabulary);
                         the runner calls it before generation
    """

    name: str
    run: Optional[Callable] = None
    validate: Callable[["StrategySpec"], None] = lambda spec: None
    needs_hidden_states: bool = False
    supports_record: bool = True
    unit: str = "prompt"
    fusable: bool = False
    runtime: Optional[Callable] = None
    check_model: Optional[Callable] = None


def register_search(name: str, **kw) -> Callable:
    """Decorator: register `fn(requests, spec, ctx) -> [Output]` as search method `name` (options: the
    `SearchMethod` fields). Duplicate names are an error; `strategy.method=<name>` chooses it."""

    def deco(fn: Callable) -> Callable:
        METHODS.register(name, SearchMethod(name=name, run=fn, **kw))
        return fn

    return deco


METHODS.register("sampling", SearchMethod(name="sampling", unit="row", fusable=True))
# the built-in methods: name -> the module whose import registers it
BUILTIN_METHODS: dict[str, str] = {
    name: f"decodebench.decoding.search.{module}" for name, module in (
        ("beam", "beam"), ("diverse_beam", "diverse_beam"), ("stochastic_beam", "stochastic_beam"),
        ("contrastive", "contrastive"), ("contrastive_decoding", "contrastive_decoding"), ("dola", "dola"),
        ("speculative", "speculative"), ("cot_decoding", "cot_decoding"), ("deepconf", "deepconf"),
        ("power_sampling", "power_sampling"),
    )
}
for _name, _module in BUILTIN_METHODS.items():
    METHODS.register_lazy(_name, _module)
