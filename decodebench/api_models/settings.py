"""The `model=api` settings (conf/model/api.yaml) and their checks, made before any request.

`ApiModelConfig` extends the `model` group's schema, so `model=api` composes under the same root schema
and local runs' configs stay as they were. The key is never a setting: `model.api_key_env` names the
environment variable that holds it, read only when the client is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

from decodebench.models import ModelConfig

API = "api"  # model.name_or_path of an API model
SERVERS = ("openai", "vllm", "llamacpp", "sglang", "generic")
ENDPOINTS = ("chat", "completions")


@dataclass
class ApiModelConfig(ModelConfig):
    """Schema of `model=api`: an OpenAI-compatible endpoint instead of local weights."""

    name_or_path: str = API
    base_url: Optional[str] = None  # e.g. http://127.0.0.1:8080/v1
    name: Optional[str] = None  # the served model's name, sent as `model`
    api_key_env: Optional[str] = None  # the environment variable holding the key (null: no key)
    endpoint: str = "chat"  # chat (/chat/completions, the server's chat template) or completions (raw text)
    server: str = "generic"  # which parameters go natively, in extra_body, or are refused
    concurrency: int = 8  # requests in flight at once
    requests_per_minute: Optional[float] = None  # null: no limit
    tokens_per_minute: Optional[float] = None  # usage tokens (prompt + completion) per minute; null: no limit
    max_retries: int = 4  # retries of one request on 429, 5xx, timeouts and dropped connections
    timeout: float = 120.0  # seconds for one request
    retry_base_s: float = 0.5  # the first backoff; it doubles per retry (full jitter), at most retry_max_s
    retry_max_s: float = 30.0
    stream: bool = True  # stream responses: time to first token and inter-token latencies
    logprobs: bool = True  # ask for the sampled tokens' log-probs (perplexity without a local model)
    top_logprobs: int = 5  # alternatives per step (entropy telemetry); 0: none
    use_n: Optional[bool] = None  # one request with `n` for all samples of a prompt; null: where the server has n


def register(cs) -> None:
    """`model=api` composes its schema from here (conf/model/api.yaml lists `api_schema` first)."""
    cs.store(group="model", name="api_schema", node=ApiModelConfig)


def is_api(mcfg) -> bool:
    return str(getattr(mcfg, "name_or_path", "")) == API


def has_n(m) -> bool:
    return bool(m.use_n) if getattr(m, "use_n", None) is not None else m.server != "generic"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_settings(m) -> None:
    """One-line ValueError naming the `model.` key; nothing here talks to the server."""
    url = getattr(m, "base_url", None)
    parsed = urlparse(str(url or ""))
    if not url or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"model.base_url must be an http(s) URL such as http://127.0.0.1:8080/v1, got {url!r}")
    if not getattr(m, "name", None):
        raise ValueError("model.name is missing: the served model's name (the server's /v1/models lists them)")
    if m.server not in SERVERS:
        raise ValueError(f"model.server must be one of {', '.join(SERVERS)}, got {m.server!r}")
    if m.endpoint not in ENDPOINTS:
        raise ValueError(f"model.endpoint must be chat or completions, got {m.endpoint!r}")
    for key in ("concurrency",):
        if isinstance(getattr(m, key), bool) or not isinstance(getattr(m, key), int) or getattr(m, key) < 1:
            raise ValueError(f"model.{key} must be an integer >= 1, got {getattr(m, key)!r}")
    if isinstance(m.max_retries, bool) or not isinstance(m.max_retries, int) or m.max_retries < 0:
        raise ValueError(f"model.max_retries must be an integer >= 0, got {m.max_retries!r}")
    for key in ("timeout", "retry_base_s", "retry_max_s", "requests_per_minute", "tokens_per_minute"):
        v = getattr(m, key, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"model.{key} must be a number > 0{' or null' if 'minute' in key else ''}, got {v!r}")
    top = m.top_logprobs
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ValueError(f"model.top_logprobs must be an integer in [0, 20] (the OpenAI API's limit), got {top!r}")
    check_key_env(m)


def check_key_env(m) -> None:
    env = getattr(m, "api_key_env", None)
    if env is None:
        return
    if not _ENV_NAME.match(str(env)):
        raise ValueError(f"model.api_key_env names an environment variable (e.g. OPENAI_API_KEY), got {env!r}; "
                         "never put the key itself in the config")
    if not os.environ.get(env):
        raise ValueError(f"model.api_key_env: the environment variable {env} is not set; export it, or set "
                         "model.api_key_env=null for a server without a key")


def api_key(m) -> str:
    """The key from the environment; servers without one still need a non-empty string for the client."""
    env = getattr(m, "api_key_env", None)
    return os.environ[env] if env else "no-key"
