"""SIGTERM and SIGUSR1 are preemption: what SLURM (and Kubernetes) send before they kill a job, SIGUSR1 early
when the job asks for it (`sbatch --signal=USR1@120`).

Inside `preemptible(verb)` (run, sweep, and any verb that generates), the signal raises `Preempted` at the
next safe point: at once, or when the write in progress (`deferred()`: a batch of rows, a result file) is
done, so every finished row is on disk and no file is torn. The verb then says in one line on stderr what was
kept and the exact command that resumes, and exits with 143 (128 + SIGTERM), as a process killed by SIGTERM
would. Rows already written are kept by a resume: a run given the same `hydra.run.dir`, a sweep the same
`sweep.dir`, generates only what is missing.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from typing import Callable, Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODE = 143


class Preempted(BaseException):
    """Raised by the handler. A BaseException, as KeyboardInterrupt: no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict = {"depth": 0, "pending": None, "argv": None, "resume": None}


def _handler(signum, frame) -> None:
    if _state["depth"]:
        _state["pending"] = signum  # raised when the write in progress is done
        return
    raise Preempted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A write that a preemption must not cut: the signal waits until it is done."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Preempted(signum)


def set_command(argv: list[str]) -> None:
    """The verb's command line (after `python -m decodebench`), for the resume hint."""
    _state["argv"], _state["resume"] = list(argv), None


def note_resume(key: str, value: str) -> None:
    """The setting a resume needs (hydra.run.dir, sweep.dir): the command given again with KEY=VALUE."""
    _state["resume"] = (key, str(value))


def resume_command() -> Optional[str]:
    if _state["resume"] is None:
        return None
    key, value = _state["resume"]
    if _state["argv"] is None:  # not started from our command line (a launcher's job): its own command
        return f"the same command with {key}={shlex.quote(value)}"
    same = ("sweep.dir", "hydra.sweep.dir") if key == "sweep.dir" else (key,)
    args = [a for a in _state["argv"] if a.lstrip("+").split("=", 1)[0] not in same]
    return shlex.join(["python", "-m", "decodebench", *args, f"{key}={value}"])


def message(verb: str, signame: str, kept: str) -> str:
    cmd = resume_command()
    tail = f"; resume with: {cmd}" if cmd else "; nothing to resume: start it again"
    return f"{verb} preempted ({signame}): {kept}{tail}"


@contextlib.contextmanager
def preemptible(verb: str, kept: Callable[[], str]) -> Iterator[None]:
    """Run a verb with SIGTERM/SIGUSR1 as preemption (see the module docstring); exit 143 with one line.
    `kept()`: what is on disk now (results.kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. an in-process test runner's worker)
        return
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state["pending"], _state["depth"] = None, 0
    try:
        yield
    except Preempted as p:
        print(message(verb, str(p), kept()), file=sys.stderr, flush=True)
        sys.exit(EXIT_CODE)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
