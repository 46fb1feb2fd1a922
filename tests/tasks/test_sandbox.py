"""Model-written code runs contained: time, memory, network, working directory."""

from __future__ import annotations

import time

from decodebench.tasks.sandbox import run_program


def test_passing_and_failing_programs():
    assert run_program("def f(x):\n    return x + 1\nassert f(1) == 2\n")
    assert not run_program("assert 1 == 2\n")
    assert not run_program("this is not python\n")


def test_time_limit_kills_a_runaway_loop():
    t0 = time.monotonic()
    assert not run_program("while True:\n    pass\n", timeout_s=1.0)
    assert time.monotonic() - t0 < 8


def test_memory_limit():
    assert not run_program("x = bytearray(600 * 2**20)\n", memory_mb=256)
    assert run_program("x = bytearray(10 * 2**20)\n", memory_mb=256)


def test_no_network():
    code = "import socket\ns = socket.socket()\n"
    assert not run_program(code)
    assert not run_program("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=2)\n")


def test_runs_in_a_fresh_temporary_directory_removed_afterwards(tmp_path):
    marker = tmp_path / "cwd.txt"
    assert not marker.exists()
    code = (f"import os\nopen('here.txt', 'w').write('x')\nopen({str(marker)!r}, 'w').write(os.getcwd())\n"
            "assert os.listdir('.') == ['program.py', 'here.txt'] or sorted(os.listdir('.')) == "
            "['here.txt', 'program.py']\n")
    assert run_program(code)
    cwd = marker.read_text()
    assert "decodebench-code-" in cwd
    import os

    assert not os.path.exists(cwd)


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert run_program("import os\nassert 'HF_TOKEN' not in os.environ\n")
