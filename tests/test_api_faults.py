"""model=api when things go wrong: 429 with Retry-After and 500 (backoff, nothing lost), a malformed reply
and a wrong key (one line, saved rows kept, no retry storm), a server killed mid-run then a resume, and no
key in any written file."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from decodebench import results
from decodebench.api_models.run import ApiRunError
from tests.api_proxy import FaultProxy
from tests.api_server import LlamaServer, api_run

pytest.importorskip("xllamacpp", reason="the llama.cpp server wheel (pip install xllamacpp; scripts/setup.sh)")

GREEDY = ["strategy=greedy", "dataset.limit=3", "strategy.max_new_tokens=4", "model.concurrency=1",
          "model.retry_base_s=0.01"]


@pytest.fixture(scope="module")
def server():
    with LlamaServer(parallel=2) as s:
        yield s


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """The greedy texts straight from the server, no proxy."""
    res = api_run(server.url, tmp_path_factory.mktemp("ref"), *GREEDY)
    return texts(res["run_dir"])


def texts(run_dir) -> list[str]:
    return [r.text for r in results.read_generations(run_dir)]


def saved(run_dir: Path) -> int:
    p = Path(run_dir) / "api_responses.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_429_with_retry_after_and_500_are_retried_and_nothing_is_lost(server, reference, tmp_path):
    def fault(i, path, headers):
        if i in (0, 1):
            return 429, {"retry-after": "0.4", "content-type": "application/json"}, b'{"error": {"message": "slow"}}'
        if i == 3:
            return 500, {"content-type": "application/json"}, b'{"error": {"message": "boom"}}'
        return None

    with FaultProxy(server.url, fault) as px:
        res = api_run(px.url, tmp_path, *GREEDY, "model.max_retries=3")
    assert texts(tmp_path) == reference
    rows = results.read_generations(tmp_path)
    assert sorted(r.prompt_id for r in rows) == sorted({r.prompt_id for r in rows}) and len(rows) == 3
    assert res["metrics"]["api_retries"] == 3 and res["metrics"]["api_requests"] == 6
    t = [e[0] for e in px.log]
    assert t[1] - t[0] >= 0.4 and t[2] - t[1] >= 0.4  # Retry-After honoured, though the backoff base is 0.01 s
    assert [e[3] for e in px.log].count("forwarded") == 3 and saved(tmp_path) == 3


def test_a_malformed_response_stops_in_one_line_and_a_rerun_requests_only_the_rest(server, reference, tmp_path):
    def fault(i, path, headers):
        return (200, {"content-type": "application/json"}, b"{not json") if i == 2 else None

    with FaultProxy(server.url, fault) as px:
        with pytest.raises(ApiRunError) as e:
            api_run(px.url, tmp_path, *GREEDY, "model.stream=false")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"model.base_url: the server at {px.url} sent a malformed response")
    assert "2 of 3 rows are saved" in msg and saved(tmp_path) == 2
    res = api_run(server.url, tmp_path, *GREEDY, "model.stream=false")
    assert res["metrics"]["api_requests"] == 1 and res["metrics"]["api_responses_on_disk"] == 2
    assert texts(tmp_path) == reference


def test_a_wrong_key_stops_at_once_with_no_retry_storm(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DECODEBENCH_TEST_KEY", "wrong-" + secrets.token_hex(8))

    def fault(i, path, headers):
        if headers.get("authorization") != "Bearer right":
            return 401, {"content-type": "application/json"}, b'{"error": {"message": "invalid api key"}}'
        return None

    with FaultProxy(server.url, fault) as px:
        with pytest.raises(ApiRunError) as e:
            api_run(px.url, tmp_path, *GREEDY, "dataset.limit=6", "model.concurrency=2", "model.max_retries=5",
                    "model.api_key_env=DECODEBENCH_TEST_KEY")
    msg = str(e.value)
    assert msg.startswith(f"model.api_key_env: the server at {px.url} refused the key (HTTP 401)") and "\n" not in msg
    assert os.environ["DECODEBENCH_TEST_KEY"] not in msg
    assert len(px.log) <= 2  # the requests already in flight, none retried


def test_the_key_is_in_no_written_file(server, tmp_path, monkeypatch, capfd):
    key = "sk-canary-" + secrets.token_hex(12)
    monkeypatch.setenv("DECODEBENCH_TEST_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))

    def fault(i, path, headers):  # the key does reach the server
        return None if headers.get("authorization") == f"Bearer {key}" else (401, {}, b"{}")

    with FaultProxy(server.url, fault) as px:
        res = api_run(px.url, tmp_path / "run", *GREEDY, "model.api_key_env=DECODEBENCH_TEST_KEY",
                      "logger=wandb", "logger.mode=offline", "record=[entropy]")
    assert len(px.log) == 3 and res["metrics"]["api_requests"] == 3
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    out, err = capfd.readouterr()
    assert key not in out and key not in err
    assert "DECODEBENCH_TEST_KEY" in (tmp_path / "run" / "config.yaml").read_text()  # the variable's name only


def test_a_server_killed_mid_run_stops_in_one_line_and_a_resume_completes(reference, tmp_path):
    run_dir, box = tmp_path / "run", {}
    first = LlamaServer(parallel=1).start()

    def go():
        try:
            api_run(first.url, run_dir, *GREEDY, "model.max_retries=1")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    t = threading.Thread(target=go)
    t.start()
    deadline = time.time() + 120
    while saved(run_dir) < 1 and time.time() < deadline:
        time.sleep(0.02)
    first.kill()
    t.join(timeout=120)
    kept = saved(run_dir)
    err = box.get("error")
    if kept == 3:
        pytest.skip("the run finished before the kill (a very fast machine)")
    assert isinstance(err, ApiRunError), err
    msg = str(err)
    assert msg.startswith(f"model.base_url: the server at {first.url} stopped answering") and "\n" not in msg
    assert f"{kept} of 3 rows are saved in {run_dir / 'api_responses.jsonl'}" in msg
    assert not (run_dir / "metrics.json").exists()
    with LlamaServer(parallel=1) as second:  # another port: the saved responses are keyed by request, not URL
        res = api_run(second.url, run_dir, *GREEDY)
    assert res["metrics"]["api_requests"] == 3 - kept and res["metrics"]["api_responses_on_disk"] == kept
    rows = results.read_jsonl(run_dir / "generations.jsonl")
    assert [r["prompt_id"] for r in rows] == sorted({r["prompt_id"] for r in rows}) and len(rows) == 3
    assert [r["text"] for r in rows] == reference
    assert len({json.loads(x)["key"] for x in (run_dir / "api_responses.jsonl").read_text().splitlines()}) == 3
