"""Run one model-written program, contained: only with task.allow_code_execution=true (README, "Tasks").

Each program runs in its own `python -I` subprocess, in a fresh temporary working directory that is
deleted afterwards, with
- a wall-clock limit (killed after `timeout_s`) and a CPU-time limit,
- an address-space limit (`memory_mb`) and no core files,
- no network: a new, empty network namespace (`unshare --net`) where the kernel allows one, and in every
  case the socket module disabled before the program's first line,
- an environment with nothing but PATH and a few Python settings (no tokens, no proxies).
This contains mistakes and runaway loops; it is not a security boundary against hostile code.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile

# Prepended to every program: sockets cannot be made, even where no network namespace is available.
GUARD = """\
import socket as _s
def _no_network(*a, **k):
    raise OSError("network access is disabled for model-written code")
_s.socket = _s.create_connection = _s.socketpair = _s.getaddrinfo = _no_network
del _s
"""


@functools.lru_cache(maxsize=1)
def netns_prefix() -> tuple[str, ...]:
    """`unshare --net --map-root-user` when this kernel lets an unprivileged user make a network namespace."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    try:
        ok = subprocess.run([exe, "--net", "--map-root-user", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (exe, "--net", "--map-root-user") if ok else ()


def _limits(timeout_s: float, memory_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        mem = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = max(1, int(timeout_s) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
        os.setsid()  # its own process group, so a timeout kills everything it started

    return apply


def run_program(code: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> bool:
    """True when the program exits 0 within the limits (an assertion failing, a crash or a timeout: False)."""
    with tempfile.TemporaryDirectory(prefix="decodebench-code-") as work:
        path = os.path.join(work, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(GUARD + code)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONHASHSEED": "0", "HOME": work, "TMPDIR": work}
        proc = subprocess.Popen([*netns_prefix(), sys.executable, "-I", path], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_limits(timeout_s, memory_mb))
        try:
            return proc.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return False
