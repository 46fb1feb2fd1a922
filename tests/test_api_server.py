"""model=api against a real llama.cpp server (the xllamacpp wheel) serving the embedded GGUF on 127.0.0.1:
greedy and sampled runs through chat and completions, streaming metrics, log-probs, seeds, extra_body
settings checked by their effect, concurrency, samples with and without `n`, a multirun grid."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decodebench import results
from decodebench.api_models.jobs import derive_seed
from tests.api_proxy import FaultProxy
from tests.api_server import LlamaServer, api_run, base
from tests.conftest import ROOT

pytest.importorskip("xllamacpp", reason="the llama.cpp server wheel (pip install xllamacpp; scripts/setup.sh)")
pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server():
    with LlamaServer(parallel=2) as s:
        yield s


def texts(res) -> list[str]:
    return [r.text for r in results.read_generations(res["run_dir"])]


def test_the_command_line_run_writes_the_usual_run_directory(server, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "decodebench", *base(server.url, "strategy=topp"), f"hydra.run.dir={out}"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["run_dir"] == str(out)
    for name in ("config.yaml", "run.json", "generations.jsonl", "metrics.json", "api_responses.jsonl"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["time_to_first_token_s"] > 0 and m["inter_token_latency_p50_ms"] > 0 and m["perplexity"] > 1
    rows = results.read_jsonl(out / "generations.jsonl")
    assert len(rows) == 2 and all(len(r["logprobs"]) == r["num_tokens"] == len(r["token_ids"]) for r in rows)
    assert {r["logprobs_kind"] for r in rows} == {"raw, pre-sampling"}
    assert all(r["served_model"] == "smollm2" and r["system_fingerprint"] and r["api_request"]["seed"] for r in rows)
    info = json.loads((out / "run.json").read_text())
    assert info["api"]["server"] == "llamacpp" and info["model"] == "api:smollm2"


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_greedy_picks_the_top_token_and_top_k_1_sampling_gives_the_same_text(server, tmp_path, endpoint):
    greedy = api_run(server.url, tmp_path / "g", "strategy=greedy", f"model.endpoint={endpoint}")
    rows = results.read_generations(greedy["run_dir"])
    for r in rows:
        for lp, top in zip(r.extra["logprobs"], r.extra["top_logprobs"]):
            assert lp == pytest.approx(max(top.values()), abs=1e-6)  # the chosen token is the argmax
    topk1 = api_run(server.url, tmp_path / "k", "strategy=topk", "strategy.top_k=1", "strategy.temperature=1.5",
                    f"model.endpoint={endpoint}")
    assert texts(topk1) == [r.text for r in rows]
    assert all(r.text for r in rows)


def test_min_p_one_keeps_only_the_top_token_and_mirostat_changes_the_text(server, tmp_path):
    greedy = texts(api_run(server.url, tmp_path / "g", "strategy=greedy"))
    assert texts(api_run(server.url, tmp_path / "m1", "strategy=minp", "strategy.min_p=1.0",
                         "strategy.temperature=2.0")) == greedy
    hot = ["strategy=temperature", "strategy.temperature=1.5", "dataset.limit=1", "strategy.max_new_tokens=12"]
    plain = texts(api_run(server.url, tmp_path / "t", *hot))
    miro = texts(api_run(server.url, tmp_path / "mi", *hot, "strategy.mirostat=2", "strategy.mirostat_tau=0.5"))
    assert plain != miro


def test_the_same_seed_gives_the_same_samples_and_each_row_records_its_seed(server, tmp_path):
    a = api_run(server.url, tmp_path / "a", "strategy=temperature", "strategy.temperature=1.5", "seed=3")
    b = api_run(server.url, tmp_path / "b", "strategy=temperature", "strategy.temperature=1.5", "seed=3")
    c = api_run(server.url, tmp_path / "c", "strategy=temperature", "strategy.temperature=1.5", "seed=4")
    assert texts(a) == texts(b) and texts(a) != texts(c)
    for r in results.read_generations(a["run_dir"]):
        assert r.extra["api_request"]["seed"] == derive_seed(3, r.prompt_id, r.sample_index)


@pytest.mark.parametrize("use_n", ["true", "false"])
def test_samples_through_n_or_through_one_request_each(server, tmp_path, use_n):
    res = api_run(server.url, tmp_path / "r", "strategy=temperature", "strategy.temperature=1.5", "dataset.limit=1",
                  "strategy.num_return_sequences=2", f"model.use_n={use_n}")  # llama.cpp: n <= its slots
    rows = results.read_generations(res["run_dir"])
    assert [r.sample_index for r in rows] == [0, 1]
    assert len({r.text for r in rows}) == 2
    assert res["metrics"]["api_requests"] == (1 if use_n == "true" else 2)


def test_concurrent_requests_overlap_and_streaming_metrics_are_measured(server, tmp_path):
    with FaultProxy(server.url, lambda *a: None) as px:
        four = api_run(px.url, tmp_path / "4", "strategy=greedy", "dataset.limit=4", "model.concurrency=4")
    first_done = min(end for _, end in px.spans)
    assert len(px.spans) == 4 and sum(start < first_done for start, _ in px.spans) >= 2
    rows = results.read_generations(four["run_dir"])
    assert [r.prompt_id for r in rows] == sorted(r.prompt_id for r in rows) and len(rows) == 4
    m = four["metrics"]
    assert 0 < m["time_to_first_token_s"] <= m["request_latency_p50_s"] * 4
    assert m["inter_token_latency_p50_ms"] <= m["inter_token_latency_p90_ms"] <= m["inter_token_latency_p99_ms"]
    assert m["output_tokens_per_s_per_request"] > 0 and m["usage_completion_tokens"] == m["generated_tokens"]


def test_streamed_and_whole_responses_give_the_same_rows(server, tmp_path):
    streamed = api_run(server.url, tmp_path / "s", "strategy=greedy")
    whole = api_run(server.url, tmp_path / "w", "strategy=greedy", "model.stream=false")
    assert texts(whole) == texts(streamed) and "time_to_first_token_s" not in whole["metrics"]
    for a, b in zip(results.read_generations(streamed["run_dir"]), results.read_generations(whole["run_dir"])):
        assert a.token_ids == b.token_ids and a.extra["logprobs"] == pytest.approx(b.extra["logprobs"], abs=1e-4)


def test_perplexity_and_entropy_come_from_the_servers_log_probs(server, tmp_path):
    res = api_run(server.url, tmp_path / "r", "strategy=topp", "record=[entropy,logprob]")
    rows = results.read_generations(res["run_dir"])
    lps = [v for r in rows for v in r.extra["logprobs"]]
    assert res["metrics"]["perplexity"] == pytest.approx(math.exp(-sum(lps) / len(lps)))
    for r in rows:
        assert r.telemetry["logprob"] == r.extra["logprobs"]
        assert all(h >= 0 for h in r.telemetry["entropy"]) and len(r.telemetry["entropy"]) == r.num_tokens


def test_api_log_probs_agree_with_the_local_model_on_the_same_tokens(server, tmp_path, embedded):
    """The server's raw log-probs against transformers on the same GGUF (teacher-forced on the served
    tokens): the numerics differ (llama.cpp's quantized kernels), the distribution must not."""
    import torch

    res = api_run(server.url, tmp_path / "r", "strategy=greedy", "model.endpoint=completions", "dataset.limit=1",
                  "strategy.max_new_tokens=8")
    (r,) = results.read_generations(res["run_dir"])
    model, tok = embedded
    prompt_ids = tok(r.prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + r.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    local = [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(r.token_ids)]
    diffs = [abs(a - b) for a, b in zip(local, r.extra["logprobs"])]
    assert max(diffs) < 0.3 and sum(diffs) / len(diffs) < 0.1, (local, r.extra["logprobs"])


def test_a_sweep_fans_its_points_out_into_concurrent_requests_and_resumes(server, tmp_path):
    from decodebench.sweep.verb import main as sweep_main

    argv = ["strategy=topp", *base(server.url, "dataset.limit=1", "strategy.max_new_tokens=4", "model.concurrency=4"),
            "sweep.grid.top_p=[0.5,0.9]", "sweep.grid.temperature=[0.7,1.0]", f"sweep.dir={tmp_path}"]
    with FaultProxy(server.url, lambda *a: None) as px:
        argv[2] = f"model.base_url={px.url}"
        res = sweep_main(argv)
        again = sweep_main(argv)  # the same command again: every point is complete, nothing is requested
    assert again["skipped"] == 4 and not again["complete"] and len(px.spans) == 4
    assert len(res["complete"]) == 4 and not res["failed"] and res["leaderboard"]
    assert len(px.spans) == 4
    first_done = min(end for _, end in px.spans)
    assert sum(start < first_done for start, _ in px.spans) >= 2  # points' requests were in flight together
    for d in res["complete"]:
        (row,) = results.read_jsonl(Path(d) / "generations.jsonl")
        assert f"top_p={row['api_request']['top_p']}" in Path(d).name


def test_a_multirun_grid_runs_every_point_on_the_api_model(server, tmp_path):
    cmd = [sys.executable, "-m", "decodebench", "-m", *base(server.url, "strategy=topp", "dataset.limit=1",
                                                               "strategy.max_new_tokens=4", "strategy.top_p=0.5,0.9"),
           f"hydra.sweep.dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    done = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(done) == 2
    assert [results.read_jsonl(d / "generations.jsonl")[0]["api_request"]["top_p"] for d in done] == [0.5, 0.9]
