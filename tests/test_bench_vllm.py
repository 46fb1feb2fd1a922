"""scripts/bench_vllm.py's helpers: the one-line reason, the result line among vLLM's logs, the token count,
the child's settings. None of them imports vLLM (it lives in its own environment, scripts/setup_vllm.sh)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bv():
    spec = importlib.util.spec_from_file_location("bench_vllm", ROOT / "scripts" / "bench_vllm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Shaped like vLLM 0.32's output when the worker's free-memory check fails: the root cause is logged by the
# engine core (on stdout), then the front end raises the generic error on stderr.
ENGINE_FAIL_STDOUT = """(EngineCore pid=1) INFO 12-02 03:55:50 [core.py:133] Initializing a V1 LLM engine (v0.32.0)
(EngineCore pid=1) ERROR 12-02 03:55:51 [core.py:1224] EngineCore failed to start.
(EngineCore pid=1) ERROR 12-02 03:55:51 [core.py:1224] ValueError: Free memory on device (3.2/23.5 GiB) on startup is \
less than desired GPU memory utilization (0.9, 21.2 GiB). Decrease GPU memory utilization or reduce GPU memory used \
by other processes.
"""
ENGINE_FAIL_STDERR = """Traceback (most recent call last):
  File "bench_vllm.py", line 120, in main
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}
"""


def test_failure_line_names_the_root_cause_not_the_generic_error(bv):
    line = bv.failure_line(ENGINE_FAIL_STDERR, ENGINE_FAIL_STDOUT)
    assert line.startswith("ValueError: Free memory on device (3.2/23.5 GiB)")
    assert "\n" not in line and len(line) <= 300


def test_failure_line_prefers_our_own_reason(bv):
    ours = bv.ERROR + "torchvision in /v does not load with its torch (x); uninstall it"
    line = bv.failure_line(ENGINE_FAIL_STDERR + ours + "\n", ENGINE_FAIL_STDOUT)
    assert line == "torchvision in /v does not load with its torch (x); uninstall it"


def test_failure_line_falls_back_to_the_generic_error_then_the_last_line(bv):
    assert bv.failure_line(ENGINE_FAIL_STDERR).startswith("RuntimeError: Engine core initialization failed")
    assert bv.failure_line("starting\nKilled\n") == "Killed"
    assert bv.failure_line("") == "no output"


def test_parse_result_finds_the_marked_line_among_logs(bv):
    out = ("(EngineCore pid=1) INFO ... {\"not\": \"this\"}\n" + bv.RESULT + json.dumps({"tokens": 7, "seconds": 0.5})
           + "\n(MainProcess pid=2) WARNING [shutdown] force killing remaining processes\n")
    assert bv.parse_result(out) == {"tokens": 7, "seconds": 0.5}
    assert bv.parse_result("{\"tokens\": 7}\n") is None


def test_count_tokens_stops_at_the_first_eos_inclusive(bv):
    rows = [[5, 6, 2, 9], [5, 6, 7], [2], []]
    assert bv.count_tokens(rows, {2}, ignore_eos=False) == 3 + 3 + 1 + 0
    assert bv.count_tokens(rows, {2}, ignore_eos=True) == 4 + 3 + 1 + 0
    assert bv.count_tokens([[4, 3, 2]], {3, 2}, ignore_eos=False) == 2


def test_count_tokens_agrees_with_bench_engine(bv):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "scripts" / "bench_engine.py")
    be = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(be)
    rows = [[1, 2, 3], [3, 3], [4, 5, 6, 7], [7, 3, 1]]
    for fixed in (False, True):
        assert bv.count_tokens(rows, {3}, fixed) == be.count(rows, {3}, fixed)


def test_child_env_fills_defaults_and_keeps_the_callers(bv):
    env = bv.child_env({"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "2"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["PATH"] == "/bin"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "auto" and env["HF_HUB_OFFLINE"] == "1"
    assert int(bv.ENV_DEFAULTS["VLLM_CPU_KVCACHE_SPACE"]) <= 4  # the shared machine's budget


def test_run_without_a_vllm_python_skips_with_one_line(bv, tmp_path):
    n, extra = bv.run(str(tmp_path / "missing" / "python"), {})
    assert n is None and "--vllm-python" in extra["skip"] and "setup_vllm.sh" in extra["skip"]


def test_run_reports_the_childs_reason_when_vllm_is_absent(bv):
    """This test's own Python has no vLLM: the child says so in one line, before anything loads."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in the test environment")
    n, extra = bv.run(sys.executable, {"model_dir": "/nowhere", "prompts": [[1]], "max_tokens": 1})
    assert n is None
    assert extra["skip"].startswith("vLLM failed: vllm is not installed in ") and "setup_vllm.sh" in extra["skip"]


def test_a_torchvision_that_does_not_load_is_named_with_its_fix(bv, tmp_path, monkeypatch):
    """The registry's vllm-cpu pulls a CUDA-built torchvision; its import error becomes one line with the fix."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    why = bv.import_problem()
    assert "torchvision::nms does not exist" in why and "pip uninstall -y torchvision" in why
    assert "\n" not in why
