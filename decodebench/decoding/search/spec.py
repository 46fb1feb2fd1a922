"""Strategy specs: a strategy config (GenerationConfig names) becomes a frozen `StrategySpec`, the per-row
`SamplingParams` plus the loop-level settings (max_new_tokens, stop strings, beam options) and the method's
options, checked by its `SearchMethod.validate` (the registry is methods.py).

    >>> spec = build_strategy({"name": "topp", "do_sample": True, "top_p": 0.9, "max_new_tokens": 8})
    >>> spec.params.top_p, spec.method
    (0.9, 'sampling')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from decodebench.decoding.params.table import PARAMS, SamplingParams
from decodebench.decoding.search.methods import METHODS

_PARAM_FIELDS = {p.name for p in PARAMS}  # the strategy keys that are per-row sampling parameters


@dataclass(frozen=True)
class StrategySpec:
    name: str
    method: str
    params: SamplingParams
    max_new_tokens: int = 64
    num_return_sequences: int = 1
    stop: tuple[str, ...] = ()
    max_time: Optional[float] = None
    stopping: tuple[str, ...] = ()  # user stopping criteria by name (engine/stopping.py)
    search: dict = field(default_factory=dict)  # method-specific options (num_beams, penalty_alpha, ...)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if any(not s for s in self.stop):
            raise ValueError("stop must not contain empty strings; remove them from strategy.stop")
        if self.max_time is not None and not self.max_time > 0:  # not `<= 0`: NaN is neither
            raise ValueError(f"max_time must be > 0 seconds, got {self.max_time}")
        from decodebench.decoding.engine.stopping import STOPPING

        for n in self.stopping:
            if n not in STOPPING:
                raise ValueError(f"stopping names an {STOPPING.unknown_message(n)}")

    def describe(self) -> dict:
        """The resolved settings, recorded with each run's results."""
        from decodebench.decoding.transforms.chain import resolve_order

        from decodebench.decoding.params.table import asks_for

        d = {}
        for p in PARAMS:
            v = getattr(self.params, p.name)
            # a tuning knob of a transform the row leaves off (xtc_threshold without XTC, ...) says nothing
            if v is None or (not p.switch and p.transform is not None and not asks_for(p.transform)(self.params)):
                continue
            if p.kind == "bool" and p.switch and v in p.off:  # watermark: false
                continue
            d[p.name] = v
        d["order"] = resolve_order(self.params.order)
        return {"name": self.name, "method": self.method, "max_new_tokens": self.max_new_tokens,
                "num_return_sequences": self.num_return_sequences, "stop": list(self.stop),
                "stopping": list(self.stopping),
                "params": d, "search": dict(self.search)}


# Loop-level keys of the strategy config that are not SamplingParams fields.
_LOOP_KEYS = {"name", "method", "max_new_tokens", "num_return_sequences", "stop", "max_time", "stopping"}
# Method options, with the neutral values that mean "not used by this method".
SEARCH_DEFAULTS: dict[str, Any] = {
    "num_beams": 1, "length_penalty": 1.0, "early_stopping": False, "num_beam_groups": 1,
    "diversity_penalty": 0.0, "penalty_alpha": None, "stream": None, "lookahead": 2,
    # selectors (decodebench/selectors.py) and the methods with a second model (contrastive_decoding,
    # dola, speculative)
    "selector": None, "extractor": None, "answer_pattern": None, "reward": None, "mbr_utility": "chrf",
    "amateur": None, "amateur_layers": None, "cd_alpha": 0.1, "cd_beta": None, "amateur_temperature": 1.0,
    "dola_layers": None, "assistant": {}, "num_assistant_tokens": 5,
    "num_assistant_tokens_schedule": "constant",
    # CoT-decoding (cot_decoding.py), DeepConf (deepconf.py), power sampling (power_sampling.py)
    "cot_k": 10, "aggregate_paths": False,
    "deepconf_mode": "offline", "warmup_traces": 16, "confidence_percentile": 90, "window_size": 2048,
    "conf_topk": 20, "deepconf_vote": "top10_bottom_window_filtered",
    "power_alpha": 4.0, "mcmc_steps": 10, "block_num": 16,
}


def _params(d: dict) -> SamplingParams:
    # the table's checks normalise lists and dicts (logit_bias, bad_words_ids, order, extra, ...)
    return SamplingParams(**{k: v for k, v in d.items() if k in _PARAM_FIELDS})


def build_strategy(d: dict) -> StrategySpec:
    """A plain strategy dict (a composed `strategy` config) -> validated StrategySpec (ValueError on bad input)."""
    unknown = set(d) - _PARAM_FIELDS - _LOOP_KEYS - set(SEARCH_DEFAULTS)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]} is not a strategy parameter")
    method = d.get("method", "sampling")
    check = METHODS.get(method)  # unknown method -> did-you-mean error
    search = {k: d.get(k, v) for k, v in SEARCH_DEFAULTS.items()}
    spec = StrategySpec(
        name=str(d.get("name") or method), method=method, params=_params(d),
        max_new_tokens=int(d.get("max_new_tokens", 64)),
        num_return_sequences=int(d.get("num_return_sequences", 1)),
        stop=tuple(d.get("stop") or ()), max_time=d.get("max_time"), search=search,
        stopping=tuple(d.get("stopping") or ()),
    )
    check.validate(spec)
    if spec.params.guidance_scale not in (None, 1.0) and check.unit != "row":
        # the running batch pairs each row with its unconditional mirror; the searches have no mirrors
        raise ValueError(f"guidance_scale: classifier-free guidance runs with sampling strategies, not with "
                         f"method {method!r}; set guidance_scale=1 or choose a sampling strategy")
    if spec.search.get("selector") is not None:
        from decodebench.selectors import check_selector

        check_selector(spec)
    return spec
