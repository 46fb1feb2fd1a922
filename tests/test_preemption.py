"""SIGTERM and SIGUSR1 are preemption (decodebench/preemption.py): a real signal sent to a real `run` and
`sweep` (model=tiny) in the middle of generation keeps every finished row, prints one line with the command
that resumes, exits 143; running that command finishes the directory with no row lost or repeated, and the
tokens equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decodebench import preemption

ROOT = Path(__file__).resolve().parents[1]
# rows one at a time, enough of them that the signal lands mid-generation
BASE = ["model=tiny", "logger=none", "progress=false", "dataset.limit=24", "batch_size=1", "strategy=sample",
        "strategy.max_new_tokens=24", "scorers.names=[rep]", "scorers.bootstrap.samples=0", "seed=7"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _tokens(gen: Path) -> dict:
    rows = _rows(gen)
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)), "a row was written twice"
    return {k: r["token_ids"] for k, r in zip(keys, rows)}


def _interrupt(args: list[str], partial: Path, sig: int, tmp: Path) -> tuple[int, str]:
    """Start `python -m decodebench ARGS`, send `sig` once `partial` holds a row, wait for the exit."""
    err = tmp / f"stderr-{sig}.txt"
    with open(err, "w") as ef:
        proc = subprocess.Popen([sys.executable, "-m", "decodebench", *args], cwd=tmp, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=ef)
        deadline = time.monotonic() + 240
        while not _rows(partial) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before the signal: {err.read_text()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=240)
    return proc.returncode, err.read_text()


def _resume(line: str, tmp: Path) -> None:
    """Run the command the preemption line gives, exactly as printed."""
    cmd = shlex.split(line.split("resume with: ", 1)[1])
    assert cmd[:3] == ["python", "-m", "decodebench"]
    done = subprocess.run([sys.executable, *cmd[1:]], cwd=tmp, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _reference(args: list[str], tmp: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "decodebench", *args], cwd=tmp, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _last_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err[-3000:]
    return lines[-1]


def test_sigterm_mid_run_keeps_rows_says_how_to_resume_and_the_resume_matches(tmp_path):
    run = tmp_path / "run"
    code, err = _interrupt([*BASE, f"hydra.run.dir={run}"], run / "generations.partial.jsonl", signal.SIGTERM,
                           tmp_path)
    line = _last_line(err)
    assert code == 143, err[-3000:]
    assert line.startswith("run preempted (SIGTERM): the finished rows are in "), line
    assert f"hydra.run.dir={run}" in line and not (run / "metrics.json").exists()
    kept = _tokens(run / "generations.partial.jsonl")
    assert 0 < len(kept) < 24

    _resume(line, tmp_path)
    assert json.loads((run / "run.json").read_text())["resumed_rows"] == len(kept)
    _reference([*BASE, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)
    resumed, whole = _tokens(run / "generations.jsonl"), _tokens(tmp_path / "whole" / "generations.jsonl")
    assert len(whole) == 24 and resumed == whole
    assert all(resumed[k] == v for k, v in kept.items())
    assert (run / "metrics.json").is_file()


def test_sigusr1_mid_sweep_keeps_points_and_rows_and_the_resume_matches(tmp_path):
    args = [*BASE, "sweep", "sweep.grid.temperature=[0.7,1.0]", "sweep.fuse=1", "sweep.leaderboard=false"]
    sdir = tmp_path / "sweep"
    first = sdir / "temperature=0.7,seed=7" / "generations.partial.jsonl"
    code, err = _interrupt([*args, f"sweep.dir={sdir}"], first, signal.SIGUSR1, tmp_path)
    line = _last_line(err)
    assert code == 143, err[-3000:]
    assert line.startswith("sweep preempted (SIGUSR1): every complete point and the finished rows of "), line
    assert f"sweep.dir={sdir}" in line
    kept = _tokens(first)
    assert kept

    _resume(line, tmp_path)
    _reference([*args, f"sweep.dir={tmp_path / 'whole'}"], tmp_path)
    for point in ("temperature=0.7,seed=7", "temperature=1,seed=7"):
        resumed = _tokens(sdir / point / "generations.jsonl")
        assert len(resumed) == 24 and resumed == _tokens(tmp_path / "whole" / point / "generations.jsonl")
    assert all(_tokens(sdir / "temperature=0.7,seed=7" / "generations.jsonl")[k] == v for k, v in kept.items())


def test_a_signal_during_a_write_waits_for_it_then_exits_143_with_one_line(capsys):
    preemption.set_command(["model=tiny"])
    preemption.note_resume("hydra.run.dir", "out/r")
    done = []
    with pytest.raises(SystemExit) as exc:
        with preemption.preemptible("run", lambda: "the finished rows are on disk"):
            with preemption.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run: it only noted the signal
                done.append("write finished")
            done.append("after the write")  # never reached: the signal is raised as the write ends
    assert exc.value.code == 143 and done == ["write finished"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run preempted (SIGTERM): the finished rows are on disk; ")
    assert err[0].endswith("resume with: python -m decodebench model=tiny hydra.run.dir=out/r")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_a_resume_with_other_settings_is_refused_before_the_model_loads(tmp_path):
    from omegaconf import OmegaConf

    from decodebench import resume
    from decodebench.config import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml({"seed": 1, "strategy": {"name": "sample"}}))
    (run / "generations.partial.jsonl").write_text('{"prompt_id": "0000", "sample_index": 0, "text": "x"}\n')
    resume.check_same_run(run, {"seed": 1, "strategy": {"name": "sample"}})  # the same settings: resumed
    with pytest.raises(ConfigError, match="hydra.run.dir: .* a run with other seed settings"):
        resume.check_same_run(run, {"seed": 2, "strategy": {"name": "sample"}})


def test_sigterm_mid_study_keeps_rows_and_the_resume_matches(tmp_path):
    """A study (every method in one fused batch) preempted mid-generation resumes to the same tokens."""
    args = ["model=tiny", "logger=none", "progress=false", "dataset.limit=6", "batch_size=1",
            "study=temperature_robustness", "scorers.bootstrap.samples=0"]
    sdir = tmp_path / "study"
    point = "topp,temperature=0.5,seed=0"
    code, err = _interrupt([*args, f"study.dir={sdir}"], sdir / point / "generations.partial.jsonl",
                           signal.SIGTERM, tmp_path)
    line = _last_line(err)
    assert code == 143, err[-3000:]
    assert line.startswith("study preempted (SIGTERM): "), line
    assert f"study.dir={sdir}" in line and not (sdir / "leaderboard.md").exists()
    kept = _tokens(sdir / point / "generations.partial.jsonl")
    assert kept

    _resume(line, tmp_path)
    _reference([*args, f"study.dir={tmp_path / 'whole'}"], tmp_path)
    points = sorted(p.name for p in (tmp_path / "whole").iterdir() if (p / "generations.jsonl").is_file())
    assert len(points) == 40
    for name in points:
        assert _tokens(sdir / name / "generations.jsonl") == _tokens(tmp_path / "whole" / name / "generations.jsonl")
    assert all(_tokens(sdir / point / "generations.jsonl")[k] == v for k, v in kept.items())
    assert (sdir / "leaderboard.md").is_file()
