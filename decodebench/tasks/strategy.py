"""lm-eval's gen_kwargs and decodebench strategies: which settings a generate_until request runs with.

lm-eval's generation keys are Hugging Face GenerationConfig names, as decodebench's strategy keys are, so
they map one to one; only lm-eval's own names are translated (max_gen_toks -> max_new_tokens, until -> stop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

CONF_STRATEGY = Path(__file__).resolve().parent.parent.parent / "conf" / "strategy"

# lm-eval's aliases for the token budget (normalize_gen_kwargs folds them into max_gen_toks) and keys that
# describe the request, not the decoding
_BUDGET_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")


def strategy_names() -> list[str]:
    return sorted(p.stem for p in CONF_STRATEGY.glob("*.yaml"))


def load_strategy(strategy: Union[str, dict, None], overrides: dict[str, Any]) -> Optional[dict]:
    """A whole strategy dict from a config name or a dict, with per-key overrides; None when neither is given.

    Checked here, once, so a bad name or value fails when the model is built, not mid-evaluation."""
    if strategy is None and not overrides:
        return None
    if isinstance(strategy, str):
        from decodebench.registry import did_you_mean
        from decodebench.specs import read_settings

        path = CONF_STRATEGY / f"{strategy}.yaml"
        if not path.is_file():
            raise ValueError(did_you_mean("strategy", strategy, strategy_names()))
        base = read_settings(path, resolve=True)
    else:
        base = dict(strategy or {"name": "custom", "do_sample": True})
    base.update({k: _number(v) for k, v in overrides.items()})
    from decodebench.decoding.search.spec import build_strategy

    build_strategy(base)  # ValueError naming the key on a bad setting
    return base


def _number(v: Any) -> Any:
    """lm-eval's CLI passes model_args through its own parser; a quoted number stays a string: convert it."""
    if isinstance(v, str):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
    return v


def gen_kwargs_strategy(kwargs: dict) -> dict:
    """lm-eval's normalized gen_kwargs (no `until`) -> a decodebench strategy dict."""
    d = {k: v for k, v in kwargs.items() if k not in _BUDGET_KEYS}
    if not d.get("do_sample"):
        d.pop("temperature", None)  # greedy: lm-eval sets temperature 0.0, which means "off" here
        d["do_sample"] = False
    d.setdefault("name", "sample" if d["do_sample"] else "greedy")
    return d


def request_strategy(base: Optional[dict], kwargs: dict, until: list[str]):
    """The StrategySpec for one group of requests: `base` (the model's strategy) or the gen_kwargs alone."""
    from decodebench.decoding.search.spec import build_strategy

    d = dict(base) if base is not None else gen_kwargs_strategy(kwargs)
    d["max_new_tokens"] = int(kwargs.get("max_gen_toks", d.get("max_new_tokens", 256)))
    # the engine stops on EOS tokens itself; the EOS text lm-eval adds only matters when trimming the text
    eos_free = [s for s in until if s]
    d["stop"] = list(dict.fromkeys(list(d.get("stop") or []) + eos_free))
    try:
        return build_strategy(d)
    except ValueError as e:
        raise ValueError(f"gen_kwargs: {e} (decodebench takes GenerationConfig names: do_sample, temperature, "
                         f"top_p, top_k, min_p, ...)") from None
