"""Untrusted files are data; one writer per directory; seeds mean what they say; model limits before weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decodebench import limits, results, runner
from decodebench.config import ConfigError
from decodebench.dirlock import LOCK_FILE, DirectoryBusy, DirLock
from decodebench.specs import to_specs
from tests.conftest import ROOT, compose
from tests.test_bad_input import crafted_run_dir, own_log_handlers  # noqa: F401  (autouse)
from tests.test_sweep import BASE as SWEEP_BASE
from tests.test_sweep import sweep as sweep_verb
from tests.test_sweep import tokens

TINY = ["model=tiny", "logger=none", "progress=false", "scorers=text", "scorers.bootstrap.samples=0"]


# ------------------------------------------------------------------------------------------ untrusted files


def score_cfg(generations: Path, *extra: str):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hcompose(config_name="score", overrides=[f"generations={generations}", "logger=none", *extra])


def test_crafted_run_dir_never_runs_its_code(tmp_path, capsys):
    """The run's config.yaml says trust_remote_code: true and names a model whose auto_map writes a marker on
    import. Scoring it refuses in one line; scoring it with text metrics works; the marker never appears."""
    from decodebench.cli import score
    from decodebench.__main__ import main

    marker = tmp_path / "marker"
    run = crafted_run_dir(tmp_path / "run", marker)
    mcfg, asked = score._model_of_run(run / "generations.jsonl", score_cfg(run))
    assert mcfg.name_or_path.endswith("run-model") and mcfg.trust_remote_code is False and asked is None
    with pytest.raises(ConfigError, match="model.trust_remote_code"):
        score.prepare(score_cfg(run))
    with pytest.raises(SystemExit) as e:
        main(["score", f"generations={run}", f"hydra.run.dir={tmp_path / 's'}", "logger=none"])
    assert e.value.code == 2 and "never run unless this command line says" in capsys.readouterr().err
    main(["score", f"generations={run}", "scorers=text", f"hydra.run.dir={tmp_path / 't'}", "logger=none",
          "progress=false"])
    assert results.read_metrics(tmp_path / "t")["gen_length"] == 3.0
    # Even past the checks, a load without this command line's consent is refused by transformers.
    from decodebench.models import load_model

    with pytest.raises(Exception):
        load_model(mcfg)
    assert not marker.exists()


def test_only_the_command_line_trusts_remote_code_and_says_which_dir_asked(tmp_path):
    from decodebench.cli import score

    run = crafted_run_dir(tmp_path / "run", tmp_path / "marker")
    mcfg, asked = score._model_of_run(run / "generations.jsonl", score_cfg(run, "model.trust_remote_code=true"))
    assert mcfg.trust_remote_code is True and asked == run / "config.yaml"
    score.prepare(score_cfg(run, "model.trust_remote_code=true"))  # allowed now; nothing imported yet
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------ one writer


def test_a_second_lock_is_refused_naming_dir_and_pid_and_a_dead_holder_never_blocks(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryBusy) as e:
            DirLock(tmp_path, "sweep.dir").acquire()
        assert str(tmp_path) in str(e.value) and f"pid {holder.pid}" in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).read_text() == str(holder.pid)  # the stale file stays ...
    with DirLock(tmp_path, "sweep.dir"):  # ... and never blocks
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DirectoryBusy):  # a flock is per open file: the same process is refused too
            DirLock(tmp_path, "sweep.dir").acquire()


def test_two_sweeps_on_one_dir_one_refused_one_clean(tmp_path, capsys):
    """A sweep in another process holds the directory; the second is refused at once, before any model
    load, with one line; the first finishes every point cleanly (metrics.json, never error.json)."""
    sdir = tmp_path / "s"
    args = ["model=tiny", "strategy=topp", "sweep", "dataset.limit=32", "strategy.max_new_tokens=48",
            "strategy.min_new_tokens=48", "batch_size=1", "logger=none", "progress=false", "scorers=text",
            "scorers.bootstrap.samples=0", "sweep.grid.top_p=[0.5,0.9]", "~sweep.grid.temperature",
            "sweep.leaderboard=false", f"sweep.dir={sdir}"]
    first = subprocess.Popen([sys.executable, "-m", "decodebench", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lock = sdir / LOCK_FILE
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.time() < deadline, first.stderr.read()
        time.sleep(0.1)
    loads = []
    real = runner.get_model
    runner.get_model = lambda *a, **k: loads.append(a) or real(*a, **k)
    try:
        code, _, err = sweep_verb(args[:2] + args[3:], capsys)
    finally:
        runner.get_model = real
    assert first.poll() is None, "the first sweep ended before the second was tried; make it longer"
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(sdir) in lines[0] and f"pid {first.pid}" in lines[0], err
    assert loads == []
    out, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1[-2000:]
    points = [p for p in sdir.iterdir() if p.is_dir()]
    assert len(points) == 2
    for p in points:
        assert results.is_complete(p) and not (p / "error.json").exists()
        assert len(results.read_generations(p)) == 32


def test_a_point_never_holds_metrics_and_error(tmp_path):
    from decodebench.sweep import execute as sweep_exec
    from decodebench.sweep.plan import make_plan

    plan = make_plan(to_specs(compose(TINY + ["strategy=topp", "sweep.grid.top_p=[0.5]", "~sweep.grid.temperature"])))
    ctx = sweep_exec.Context(plan, tmp_path, {}, None, None, [], {}, "g")
    p = plan.points[0]
    (tmp_path / p.name).mkdir()
    results.write_json_atomic(tmp_path / p.name / results.METRICS, {"x": 1.0})
    sweep_exec.write_error(ctx, p, RuntimeError("late failure"))
    assert not (tmp_path / p.name / "error.json").exists() and ctx.failed  # reported, not written beside it


# ------------------------------------------------------------------------------------------ seeds


def test_seed_on_the_command_line_is_the_sweep_seed_and_points_equal_runs_alone(tmp_path, capsys):
    args = [a for a in SWEEP_BASE if not a.startswith("sweep.grid.temperature")] + ["~sweep.grid.temperature"]
    args += ["seed=5", f"sweep.dir={tmp_path / 's'}"]
    code, res, err = sweep_verb(args, capsys)
    assert code == 0, err
    names = sorted(Path(d).name for d in res["complete"])
    assert names == ["top_p=0.5,seed=5", "top_p=0.9,seed=5"]
    for top_p in (0.5, 0.9):
        alone = [a for a in args if not a.startswith(("sweep.", "~sweep.", "seed="))]
        alone += [f"strategy.top_p={top_p}", "seed=5"]
        r = runner.execute(to_specs(compose(alone)), tmp_path / f"alone{top_p}")
        assert tokens(r["run_dir"]) == tokens(tmp_path / "s" / f"top_p={top_p},seed=5")
        assert json.loads((tmp_path / "s" / f"top_p={top_p},seed=5" / "run.json").read_text())["seed"] == 5


def test_shipped_grids_use_the_top_level_seed():
    from decodebench.config import conf_dir
    from decodebench.sweep.plan import make_plan

    for f in sorted((conf_dir() / "sweep").glob("*.yaml")):
        plan = make_plan(to_specs(compose(["model=tiny", f"strategy={f.stem}", "seed=7"])))
        assert plan.seeds == [7] and all(p.seed == 7 for p in plan.points), f.name


# ------------------------------------------------------------------------------------------ model limits


def test_truncate_left_keeps_the_last_tokens_and_empty_prompts_are_skipped_with_a_count(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ["x" * 600 + "END", "", "short"]))
    cfg = compose(TINY + ["dataset=file", f"dataset.path={f}", "strategy.max_new_tokens=12",
                          "dataset.truncate=left", "dataset.empty_prompts=skip"])
    run_dir = runner.execute(to_specs(cfg), tmp_path / "r")["run_dir"]
    recs = results.read_generations(run_dir)
    assert len(recs) == 2 and len(recs[0].prompt_token_ids) == 512 - 12
    from decodebench.tiny_tokenizer import byte_tokenizer

    assert byte_tokenizer().decode(recs[0].prompt_token_ids).endswith("xEND")
    assert json.loads((Path(run_dir) / "run.json").read_text())["empty_prompts_skipped"] == 1


def test_kv_cache_refusal_names_the_bytes():
    shape = limits.Shape(max_positions=None, layers=30, kv_heads=3, head_dim=64)
    need = limits.check_kv_memory(8, 1000, shape, "float32", "cpu", available=10**12)
    assert need == 2 * 30 * 3 * 64 * 4 * 8 * 1000
    with pytest.raises(ConfigError, match=rf"needs {need} bytes .* but cpu has 1000 bytes"):
        limits.check_kv_memory(8, 1000, shape, "float32", "cpu", available=1000)


def test_model_shape_from_gguf_metadata_equals_the_dequantized_config():
    from decodebench.models import ModelConfig, embedded_gguf

    gguf = limits._gguf_shape(embedded_gguf())
    assert gguf == limits.Shape(max_positions=8192, layers=30, kv_heads=3, head_dim=64, vocab=49152)
    assert limits.model_shape(ModelConfig()) == gguf
    assert limits.model_shape(ModelConfig(name_or_path="tiny-random")).max_positions == 512


def test_the_issue_beam_case_needs_more_than_a_24_gb_machine_and_a_small_beam_fits():
    """num_beams=100000 on model=tiny with dataset.limit=4 and batch_size=auto (killed by the OOM killer at
    about 24 GB before): the auto batch may hold the 4 prompts' beams, 400000 rows; refused with 24 GB free.
    4 beams fit in 100 MB."""
    shape = limits.model_shape(compose(["model=tiny"]).model)
    assert shape.vocab == 259
    with pytest.raises(ConfigError, match=r"^strategy.num_beams: 400000 rows \(100000 beams a prompt\)"):
        limits.check_kv_memory(400000, 40, shape, "float32", "cpu", available=24 * 10**9, beams=100000)
    assert limits.check_kv_memory(4, 40, shape, "float32", "cpu", available=10**8, beams=4) < 10**8


def test_row_memory_bound_holds_what_rows_really_take():
    """limits.ROW_BYTES/TOKEN_BYTES bound the host memory a row holds (its request and its record read back),
    as tracemalloc measures it; and not by more than 4x (a bound, not a guess)."""
    import tracemalloc

    from decodebench.decoding.engine import Request

    n, prompt_len, new = 2000, 30, 20
    line = json.dumps({"prompt_id": "0001", "prompt": "word " * prompt_len, "prompt_token_ids": list(range(300, 330)),
                       "sample_index": 0, "text": "word " * new, "token_ids": list(range(1000, 1000 + new)),
                       "num_tokens": new, "finish_reason": "length", "reference": None, "category": None})
    ids = list(range(300, 330))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [(Request(prompt_id="0001", prompt_ids=list(ids), sample_index=i, params=None, seed=0),
             results.GenerationRecord.from_json(json.loads(line))) for i in range(n)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    bound = n * (limits.ROW_BYTES + limits.TOKEN_BYTES * (prompt_len + new))
    assert len(held) == n and used <= bound <= 4 * used, (used, bound)
    with pytest.raises(ConfigError, match=r"^strategy.num_return_sequences: 4000000 rows \(4 prompts x 1000000\)"):
        limits.check_rows_memory(4, 1000000, 50, available=8 * 10**9)


def test_deep_json_never_crashes_a_reader(tmp_path):
    """100,000 brackets: each reader refuses in one line naming the file and line (a parser's recursion
    could otherwise end the process)."""
    from decodebench import untrusted

    deep = "[" * 100000 + "]" * 100000
    run = tmp_path / "run"
    run.mkdir()
    (run / "generations.jsonl").write_text('{"prompt_id": "a", "text": "t"}\n' + deep + "\n")
    with pytest.raises(ValueError, match=r"run/generations.jsonl:2: JSON nested more than 200 levels"):
        results.read_generations(run)
    (run / "metrics.json").write_text('{"a": "[[[[ in a string is not nesting"}')
    assert results.read_metrics(run) == {"a": "[[[[ in a string is not nesting"}
    assert untrusted.too_deep("[" * 201 + "]" * 201) == 200 and untrusted.too_deep("[" * 200 + "]" * 200) is None


def test_logit_bias_from_the_command_line_changes_the_tokens(tmp_path):
    """README's form, through the CLI: a large bias on one token makes greedy decoding emit only it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    base = ["model=tiny", "logger=none", "progress=false", "dataset.limit=2", "strategy=greedy",
            "strategy.max_new_tokens=6", "scorers=text", "scorers.bootstrap.samples=0"]

    def run(name: str, *extra: str) -> list:
        done = subprocess.run([sys.executable, "-m", "decodebench", *base, *extra, f"hydra.run.dir={tmp_path / name}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return [r.token_ids for r in results.read_generations(tmp_path / name)]

    plain, biased = run("plain"), run("biased", "strategy.logit_bias={65:100.0}")
    assert all(t == [65] * 6 for t in biased) and plain != biased


def test_an_unwritable_datasets_cache_is_named_not_dataset_path(tmp_path, monkeypatch):
    import datasets

    from decodebench.cli.preflight import compose_checked

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", blocker / "cache")
    err = compose_checked(["model=tiny"])[1]
    assert err.startswith(f"HF_DATASETS_CACHE: cannot write the datasets cache in {blocker / 'cache'}"), err
