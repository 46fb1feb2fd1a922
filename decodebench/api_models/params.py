"""Strategy settings -> one request body, per server kind: native, `extra_body` (the server's own names), or
refused in one line before any request.

Every setting the server knows is sent, neutral ones included: servers' defaults are not neutral
(llama-cpp-python samples with temperature 0.8, top_k 40, min_p 0.05 and repeat_penalty 1.1 when told
nothing), and unknown `extra_body` keys are accepted silently, so each server's names are spelled out here.
"""

from __future__ import annotations

from decodebench.decoding.params import BY_NAME

# decodebench's name -> the OpenAI Chat Completions name (every kind takes these)
NATIVE = {"temperature": "temperature", "top_p": "top_p", "presence_penalty": "presence_penalty",
          "frequency_penalty": "frequency_penalty", "logit_bias": "logit_bias"}

# decodebench's name -> the server's extra_body name, with the value that turns it off there
_VLLM = {"top_k": ("top_k", -1), "min_p": ("min_p", 0.0), "repetition_penalty": ("repetition_penalty", 1.0),
         "min_new_tokens": ("min_tokens", 0)}
_SGLANG = {"top_k": ("top_k", -1), "min_p": ("min_p", 0.0), "repetition_penalty": ("repetition_penalty", 1.0),
           "min_new_tokens": ("min_new_tokens", 0)}
_LLAMACPP = {
    "top_k": ("top_k", 0), "min_p": ("min_p", 0.0), "typical_p": ("typical_p", 1.0),
    "repetition_penalty": ("repeat_penalty", 1.0), "top_n_sigma": ("top_n_sigma", -1.0),
    "xtc_probability": ("xtc_probability", 0.0), "xtc_threshold": ("xtc_threshold", 0.1),
    "dynatemp_range": ("dynatemp_range", 0.0), "dynatemp_exponent": ("dynatemp_exponent", 1.0),
    "mirostat": ("mirostat", 0), "mirostat_tau": ("mirostat_tau", 5.0), "mirostat_eta": ("mirostat_eta", 0.1),
    "dry_multiplier": ("dry_multiplier", 0.0), "dry_base": ("dry_base", 1.75),
    "dry_allowed_length": ("dry_allowed_length", 2), "dry_penalty_last_n": ("dry_penalty_last_n", -1),
    "dry_sequence_breakers": ("dry_sequence_breakers", None), "min_tokens_to_keep": ("min_keep", 1),
}
EXTRA = {"openai": {}, "generic": {}, "vllm": _VLLM, "sglang": _SGLANG, "llamacpp": _LLAMACPP}
# llama.cpp applies its chain in its own order; decodebench's default order (hf) puts temperature first
LLAMACPP_HF_ORDER = ["penalties", "dry", "temperature", "top_k", "typ_p", "top_p", "min_p", "xtc", "top_n_sigma"]

SERVER_NAMES = {"openai": "the OpenAI API", "generic": "a generic OpenAI-compatible server",
                "vllm": "vLLM's server", "sglang": "SGLang's server", "llamacpp": "llama.cpp's server"}
# settings that are parameters, not transforms a server could apply
_NOT_SAMPLERS = {"do_sample", "order", "penalize_prompt"}
MAX_STOP = {"openai": 4}


def _where(name: str) -> list[str]:
    return [k for k, table in EXTRA.items() if name in table]


def refuse(name: str, server: str) -> str:
    where = _where(name)
    names = ", ".join(where[:-1]) + " or " + where[-1] if len(where) > 1 else "".join(where)
    hint = (f"set model.server={names}, or drop it" if where else
            "no API server applies it: run it on a local model, or drop it")
    return f"strategy.{name}: {SERVER_NAMES[server]} has no {name}; {hint}"


def refused(spec, server: str) -> list[str]:
    """One line per setting `server` cannot apply (empty: the strategy runs there as configured)."""
    p, out = spec.params, []
    for param in BY_NAME.values():
        name = param.name
        if name in _NOT_SAMPLERS or name in NATIVE or name in EXTRA[server]:
            continue
        if name == "extra" and p.extra:
            out.append(f"strategy.extra: plugin transforms run only on local models; drop {dict(p.extra)}")
        elif name != "extra" and param.switch and param.is_set(getattr(p, name)):
            out.append(refuse(name, server))
    if p.repetition_penalty not in (None, 1.0) and not p.penalize_prompt:
        out.append("strategy.penalize_prompt: API servers always count the prompt's tokens in "
                   "repetition_penalty; set it to true, or run on a local model")
    if spec.stopping:
        out.append("strategy.stopping: user stopping criteria run only on local models; use strategy.stop strings")
    if spec.max_time is not None:
        out.append("strategy.max_time: not applied to API requests; use model.timeout, or drop it")
    limit = MAX_STOP.get(server)
    if limit is not None and len(spec.stop) > limit:
        out.append(f"strategy.stop: {SERVER_NAMES[server]} takes at most {limit} stop strings; give fewer")
    return out


def sampling_body(spec, server: str) -> tuple[dict, dict]:
    """(native keys, extra_body keys) for one request, every setting the server knows sent explicitly."""
    p = spec.params
    greedy = p.greedy
    native = {"temperature": 0.0 if greedy else float(1.0 if p.temperature is None else p.temperature),
              "top_p": 1.0 if greedy or p.top_p is None else float(p.top_p),
              "presence_penalty": float(p.presence_penalty or 0.0),
              "frequency_penalty": float(p.frequency_penalty or 0.0)}
    if p.logit_bias:
        native["logit_bias"] = {str(k): float(v) for k, v in dict(p.logit_bias).items()}
    if spec.stop:
        native["stop"] = list(spec.stop)
    extra = {}
    for name, (key, off) in EXTRA[server].items():
        value = getattr(p, name)
        warper = BY_NAME[name].warper
        if value is None or (greedy and warper):
            value = BY_NAME[name].default if not BY_NAME[name].switch else off
        if value is None or (key == "dry_penalty_last_n" and value == -1):
            continue  # the server's own value is the same (the whole context), and it refuses -1
        extra[key] = list(value) if isinstance(value, tuple) else value
    if server == "llamacpp" and p.order == "hf":
        extra["samplers"] = LLAMACPP_HF_ORDER
    return native, extra
