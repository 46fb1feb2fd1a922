"""Runtime failures end in one line: Ctrl-C (exit 130, saying what was kept), a full disk (naming the path),
W&B without a server (bounded wait, offline fallback, warnings on stderr); result files and leaderboards are
safe to share (the umask's mode, escaped markdown)."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decodebench import results
from decodebench.specs import to_specs
from tests.conftest import ROOT, compose
from tests.test_bad_input import own_log_handlers  # noqa: F401  (autouse)
from tests.test_report import m, write_run

TINY = ["model=tiny", "logger=none", "progress=false", "scorers=text", "scorers.bootstrap.samples=0"]


def error_lines(stderr: str) -> list[str]:
    """stderr less the library deprecation notices other code may print (not ours to judge here)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and "deprecated" not in ln and "forward_call" not in ln]


def test_ctrl_c_during_a_run_is_one_line_exit_130_keeping_finished_batches(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "decodebench", *TINY, "dataset.limit=64", "batch_size=1",
                          "strategy.max_new_tokens=200", "strategy.min_new_tokens=200", f"hydra.run.dir={out}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / results.PARTIAL).is_file() or not (out / results.PARTIAL).read_text():
        assert p.poll() is None and time.time() < deadline, p.stderr.read()
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("run interrupted;") and str(out / results.PARTIAL) in lines[0]
    assert results.read_jsonl(out / results.PARTIAL) and not (out / results.METRICS).exists()


@pytest.mark.parametrize("verb", ["score", "report", "sweep"])
def test_ctrl_c_on_every_other_verb_is_one_line_exit_130(verb, tmp_path, monkeypatch, capsys):
    import decodebench.report.leaderboard  # noqa: F401  (the module the verb calls into)
    from decodebench import report, runner
    from decodebench.__main__ import main
    from decodebench.scorers import plan

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    run = write_run(tmp_path / "r", metrics=m(0.5, 5.0))
    argv = {"score": ["score", f"generations={run}", "scorers=text", f"hydra.run.dir={tmp_path / 's'}", "logger=none"],
            "report": ["report", str(run)],
            "sweep": ["sweep", *TINY, "strategy=topp", f"sweep.dir={tmp_path / 'sw'}"]}[verb]
    monkeypatch.setattr(plan.ScorerPlan, "score", interrupt)
    monkeypatch.setattr(report.leaderboard, "write_leaderboard", interrupt)
    monkeypatch.setattr(runner, "get_model", interrupt)
    with pytest.raises(SystemExit) as e:
        main(argv)
    lines = error_lines(capsys.readouterr().err)
    assert e.value.code == 130 and len(lines) == 1 and "interrupted" in lines[0], lines


def _small_files(limit: int):
    def pre():  # a file may not grow past `limit` bytes: writes fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return pre


def test_a_write_that_fails_mid_run_is_one_line_naming_the_file(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "decodebench", *TINY, "dataset.limit=16", "strategy.max_new_tokens=64",
                        f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       preexec_fn=_small_files(8000), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    lines = error_lines(p.stderr)
    assert len(lines) == 1 and lines[0] == f"error: {out / results.PARTIAL}: File too large", lines


def test_disk_full_fails_the_sweep_point_with_its_error_json(tmp_path, monkeypatch, capsys):
    from decodebench.sweep import execute as sweep_exec
    from tests.test_sweep import BASE, sweep

    real = sweep_exec.ResumeWriter.write

    def full(self, records):
        if "top_p=0.9" in str(self.dir):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.partial))
        return real(self, records)

    monkeypatch.setattr(sweep_exec.ResumeWriter, "write", full)
    code, res, err = sweep([*BASE, "~sweep.grid.temperature", f"sweep.dir={tmp_path / 's'}"], capsys)
    assert code == 1 and len(res["failed"]) == 1
    bad = tmp_path / "s" / "top_p=0.9,seed=0"
    error = json.loads((bad / "error.json").read_text())["error"]
    assert "No space left on device" in error and str(bad / results.PARTIAL) in error
    assert not (bad / results.METRICS).exists() and results.is_complete(tmp_path / "s" / "top_p=0.5,seed=0")


def test_wandb_online_without_a_server_waits_init_timeout_then_logs_offline_warning_on_stderr(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "decodebench", *[a for a in TINY if a != "logger=none"],
                        "dataset.limit=2", "strategy.max_new_tokens=3", "logger.mode=online", "logger.init_timeout=2",
                        f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert time.time() - t0 < 60  # not wandb's own ~90 s of retries
    assert "logging offline under" in p.stderr and "W&B" not in p.stdout
    assert json.loads(p.stdout.strip().splitlines()[-1])["run_dir"] == str(out)
    assert list((out / "wandb").glob("offline-run-*"))


def test_result_files_get_the_umask_mode(tmp_path):
    from decodebench import runner

    old = os.umask(0o022)
    try:
        run_dir = Path(runner.execute(to_specs(compose(TINY + ["dataset.limit=2", "strategy.max_new_tokens=3"])),
                                      tmp_path / "r")["run_dir"])
    finally:
        os.umask(old)
    for name in ("config.yaml", "run.json", results.GENERATIONS, results.METRICS):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name


def test_markdown_leaderboard_escapes_prompt_ids_and_model_strings(tmp_path):
    from decodebench.report import write_leaderboard

    d = write_run(tmp_path / "r", metrics=m(0.5, 5.0), model="<img src=x onerror=alert(1)>[link](http://x)")
    gens = [g.to_json() for g in results.read_generations(d)]
    gens[0]["prompt_id"] = "x0<script>alert(1)</script>"
    (d / results.GENERATIONS).write_text("".join(json.dumps(g) + "\n" for g in gens))
    md = Path(write_leaderboard(d, samples=3)["markdown"]).read_text()
    assert "<script>" not in md and "<img" not in md and "](http" not in md
    assert "Prompt x0&lt;script&gt;alert(1)&lt;/script&gt;:" in md
