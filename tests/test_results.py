"""The one generation record and the one run-directory reader (decodebench/results.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from decodebench import results, wandb_sink
from decodebench.results import GenerationRecord


def test_record_round_trips_with_method_fields_flat_on_disk(tmp_path):
    rec = GenerationRecord(prompt_id="p1", prompt="Hi", prompt_token_ids=[1, 2], sample_index=1, text="there",
                           token_ids=[3], num_tokens=1, finish_reason="eos", score=-0.5,
                           extra={"stream_emitted": 1, "gumbel": 0.25})
    line = rec.to_json()
    assert list(line)[:10] == ["prompt_id", "prompt", "prompt_token_ids", "sample_index", "text", "token_ids",
                               "num_tokens", "finish_reason", "reference", "category"]
    assert line["score"] == -0.5 and line["stream_emitted"] == 1 and "extra" not in line and "telemetry" not in line
    w = results.GenerationsWriter(tmp_path)
    w.write([rec])
    w.close()
    assert json.loads((tmp_path / results.GENERATIONS).read_text()) == line
    (back,) = results.read_generations(tmp_path)
    assert back == rec and back.extra == {"stream_emitted": 1, "gumbel": 0.25}


def test_read_run_complete_failed_and_unfinished(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / results.CONFIG).write_text(yaml.safe_dump({"strategy": {"name": "topp", "top_p": 0.9}, "seed": 3}))
    results.write_json_atomic(done / results.RUN_INFO, {"strategy": {"name": "topp"}, "seed": 3})
    results.write_json_atomic(done / results.METRICS, {"diversity": 0.5})
    run = results.read_run(done)
    assert run.complete and run.metrics == {"diversity": 0.5} and run.strategy == "topp" and run.seed == 3
    assert run.config["strategy"]["top_p"] == 0.9 and run.error is None

    failed = tmp_path / "failed"
    results.write_json_atomic(failed / results.ERROR, {"error": "RuntimeError: boom", "point": {"top_p": 0.5}})
    results.write_json_atomic(failed / results.RUN_INFO, {"strategy": {"name": "minp"}, "seed": 1})
    run = results.read_run(failed)
    assert not run.complete and run.error["error"] == "RuntimeError: boom" and run.config is None
    assert run.strategy == "minp" and run.seed == 1  # run.json stands in for a missing config.yaml

    assert results.is_run_dir(done) and results.is_run_dir(failed) and not results.is_run_dir(tmp_path)


def test_wandb_sink_logs_a_run_directory_offline(tmp_path, monkeypatch):
    """The sink reads a plain logger dict and the run directory; what lands in W&B is what is on disk."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    d = tmp_path / "run"
    d.mkdir()
    (d / results.CONFIG).write_text(yaml.safe_dump({"strategy": {"name": "greedy"}, "seed": 0}))
    results.write_json_atomic(d / results.METRICS, {"diversity": 0.25})
    w = results.GenerationsWriter(d)
    recs = [GenerationRecord(prompt_id="p0", prompt="Once", prompt_token_ids=[5, 6], sample_index=0, text="a b",
                             token_ids=[1, 2], num_tokens=2, finish_reason="length", reference="ref a"),
            GenerationRecord(prompt_id="p1", prompt="Then", prompt_token_ids=[7], sample_index=1, text="c",
                             token_ids=[3, 0], num_tokens=2, finish_reason="eos", reference=None)]
    w.write(recs)
    w.close()
    logged = {}

    class FakeRun:
        dir = str(d / "wandb" / "offline-run-x" / "files")
        summary: dict = {}

        def log(self, data):
            logged.update(data)

        def finish(self):
            pass

    import wandb

    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw) or FakeRun())
    logger = {"name": "wandb", "mode": "offline", "project": "p", "entity": None, "group": None, "tags": [],
              "num_samples": 5}
    out = wandb_sink.log_run(logger, results.read_run(d))
    assert out == str(d / "wandb" / "offline-run-x")
    assert seen["job_type"] == "greedy" and seen["config"] == {"strategy": {"name": "greedy"}, "seed": 0}
    assert logged["diversity"] == 0.25
    table = logged["generations"]
    # the readable fields of generations.jsonl, one row per line on disk; token ids stay on disk
    assert table.columns == ["prompt_id", "prompt", "sample_index", "text", "num_tokens", "finish_reason",
                             "reference"]
    assert table.data == [["p0", "Once", 0, "a b", 2, "length", "ref a"], ["p1", "Then", 1, "c", 2, "eos", None]]
    assert wandb_sink.log_run({**logger, "name": "none"}, results.read_run(d)) is None


def test_generations_reader_names_the_bad_line(tmp_path):
    (tmp_path / results.GENERATIONS).write_text('{"prompt_id": 0, "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match=r"generations.jsonl:2: a generation record needs 'prompt_id' \(fields: text\)"):
        results.read_generations(tmp_path)
