"""model=api without a server: the parameter mapping per server kind, one-line refusals before any request,
seeds, backoff, the rate limit and the response file."""

from __future__ import annotations

import asyncio
import json
import math
import random

import pytest

from decodebench.api_models.client import Backoff, RateLimit
from decodebench.api_models.jobs import build_jobs, derive_seed, entropy_lower_bound
from decodebench.api_models.params import sampling_body
from decodebench.api_models.store import ResponseStore
from decodebench.cli import preflight
from decodebench.data import Prompt
from decodebench.decoding.search.spec import build_strategy
from tests.conftest import compose

API = ["model=api", "model.base_url=http://127.0.0.1:9/v1", "model.name=m", "logger=none"]


def spec_of(**kw):
    return build_strategy({"name": "t", "do_sample": True, **kw})


def error_of(*overrides):
    return preflight.compose_checked([*API, *overrides])[1]


def test_openai_refuses_top_k_in_one_line_naming_the_servers_that_have_it():
    err = error_of("model.server=openai", "strategy=topk")
    assert err == ("strategy.top_k: the OpenAI API has no top_k; set model.server=vllm, sglang or llamacpp, "
                   "or drop it")


@pytest.mark.parametrize("overrides, key", [
    (["strategy=beam"], "strategy: beam"),
    (["strategy=contrastive"], "strategy: "),
    (["strategy=epsilon", "model.server=llamacpp"], "strategy.epsilon_cutoff: "),
    (["strategy=mirostat", "model.server=vllm"], "strategy.mirostat: vLLM's server has no mirostat; set "
                                                 "model.server=llamacpp"),
    (["scorers.names=[coherence]"], "scorers.coherence: needs a local model"),
    (["model.logprobs=false"], "scorers.perplexity: needs the generating model's log-probs"),
    (["record=[kept]"], "record: model=api records only entropy and logprob"),
    (["model.api_key_env=DECODEBENCH_TEST_UNSET_KEY"], "model.api_key_env: the environment variable "
                                                       "DECODEBENCH_TEST_UNSET_KEY is not set"),
    (["model.server=openai", "strategy.stop=[a,b,c,d,e]"], "strategy.stop: the OpenAI API takes at most 4"),
    (["model.top_logprobs=21"], "model.top_logprobs must be an integer in [0, 20]"),
    (["model.base_url=localhost:8080"], "model.base_url must be an http(s) URL"),
    (["dataset.chat_template=true"], "dataset.chat_template: needs a local tokenizer"),
])
def test_refused_before_any_request(overrides, key, monkeypatch):
    monkeypatch.delenv("DECODEBENCH_TEST_UNSET_KEY", raising=False)
    err = error_of(*overrides)
    assert err is not None and err.startswith(key) and "\n" not in err, err


def test_selectors_and_sampling_strategies_pass_the_checks():
    assert error_of("strategy=self_consistency", "model.server=vllm") is None
    assert error_of("strategy=mirostat", "model.server=llamacpp") is None
    assert error_of("strategy=minp", "model.server=sglang") is None


def test_every_setting_is_sent_explicitly_under_the_servers_own_names():
    native, extra = sampling_body(spec_of(temperature=0.7, top_k=20, repetition_penalty=1.2), "llamacpp")
    assert native == {"temperature": 0.7, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert extra["top_k"] == 20 and extra["repeat_penalty"] == 1.2 and "repetition_penalty" not in extra
    assert extra["min_p"] == 0.0 and extra["mirostat"] == 0 and extra["typical_p"] == 1.0  # neutral, not absent
    _, vllm = sampling_body(spec_of(min_new_tokens=3), "vllm")
    assert vllm == {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "min_tokens": 3}
    assert sampling_body(spec_of(top_p=0.9), "openai")[1] == {}


def test_greedy_sends_temperature_zero_and_switches_warpers_off():
    native, extra = sampling_body(build_strategy({"name": "g", "do_sample": False, "top_k": 5}), "llamacpp")
    assert native["temperature"] == 0.0 and native["top_p"] == 1.0 and extra["top_k"] == 0


class _M(dict):
    __getattr__ = dict.__getitem__


def _model(**kw):
    return _M(name="m", endpoint="chat", server="llamacpp", logprobs=True, top_logprobs=3, use_n=None, **kw)


def test_samples_use_n_where_the_server_has_it_else_one_seeded_request_each():
    prompts = [Prompt(id="a", text="x", category=None, reference=None)]
    spec = spec_of(num_return_sequences=3)
    (one,) = build_jobs(_model(), spec, prompts, seed=7)
    assert one.body["n"] == 3 and one.samples == (0, 1, 2)
    each = build_jobs(_M({**_model(), "server": "generic"}), spec, prompts, 7)
    assert [j.body["n"] for j in each] == [1, 1, 1]
    assert [j.body["seed"] for j in each] == [derive_seed(7, "a", s) for s in range(3)]
    assert len({j.key for j in each}) == 3 and len({j.body["seed"] for j in each}) == 3
    assert build_jobs(_M({**_model(), "server": "generic"}), spec, prompts, 7)[1].key == each[1].key  # stable


def test_backoff_is_jittered_exponential_and_honours_retry_after():
    b = Backoff(base_s=1.0, max_s=8.0, rng=random.Random(0))
    delays = [b.delay(a, None) for a in range(6) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:200]) <= 1.0 and max(delays[600:800]) > 4.0  # the cap doubles per attempt
    assert all(b.delay(0, 5.0) >= 5.0 for _ in range(50))


def test_rate_limit_spaces_request_starts(monkeypatch):
    clock = [0.0]
    slept = []

    async def fake_sleep(s):
        slept.append(s)
        clock[0] += s

    limit = RateLimit(rpm=120, tpm=None, clock=lambda: clock[0])

    async def go():
        for _ in range(4):
            await limit.acquire()

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    asyncio.run(go())
    assert slept == [0.5, 0.5, 0.5]


def test_a_line_cut_by_a_kill_is_dropped_and_the_file_stays_appendable(tmp_path):
    s = ResponseStore(tmp_path)
    s.add("k1", {"choices": []})
    s.close()
    with open(tmp_path / "api_responses.jsonl", "a") as f:
        f.write('{"key": "k2", "respo')  # killed mid-write
    s = ResponseStore(tmp_path)
    assert "k1" in s and "k2" not in s
    s.add("k2", {"choices": [1]})
    s.close()
    lines = (tmp_path / "api_responses.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["k1", "k2"]


def test_entropy_lower_bound_counts_the_unseen_mass():
    import math

    assert entropy_lower_bound({"a": math.log(0.5), "b": math.log(0.5)}) == pytest.approx(math.log(2))
    assert entropy_lower_bound({"a": math.log(0.5)}) == pytest.approx(math.log(2))  # 0.5 unseen as one outcome


def test_local_configs_are_unchanged_by_the_api_schema():
    cfg = compose(["logger=none"])
    assert "base_url" not in cfg.model


def test_tokens_per_minute_waits_for_the_window_to_free(monkeypatch):
    clock = [0.0]
    slept = []

    async def fake_sleep(s):
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limit = RateLimit(rpm=None, tpm=100, clock=lambda: clock[0])

    async def go():
        await limit.acquire()
        limit.spend(60)
        clock[0] += 1.0
        await limit.acquire()  # 60 of 100 used: goes at once
        limit.spend(50)
        await limit.acquire()  # 110 used: waits until the first 60 leave the window

    asyncio.run(go())
    assert slept and clock[0] >= 60.0 and sum(slept) == pytest.approx(59.0)


def test_perplexity_without_server_log_probs_says_so_in_one_line():
    from decodebench.api_models.metrics import perplexity_from_logprobs
    from decodebench.config import ConfigError
    from decodebench.results import GenerationRecord

    recs = [GenerationRecord(prompt_id="a", text="x", extra={"logprobs": [-1.0, -2.0]}),
            GenerationRecord(prompt_id="b", text="y")]
    with pytest.raises(ConfigError, match=r"^scorers.perplexity: the server at http://h/v1 returned no log-probs "
                                          r"for 1 of 2 rows; set scorers.perplexity.model="):
        perplexity_from_logprobs(recs, "http://h/v1")
    assert perplexity_from_logprobs(recs[:1], "u")["perplexity"] == pytest.approx(math.exp(1.5))


def test_the_command_line_refuses_in_one_line_with_exit_code_2():
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    p = subprocess.run([sys.executable, "-m", "decodebench", *API, "model.server=openai", "strategy=minp"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: strategy.min_p: the OpenAI API has no min_p; set "
                                             "model.server=vllm, sglang or llamacpp, or drop it"]
