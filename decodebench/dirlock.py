"""One writer per result directory: an exclusive `fcntl.flock` on `<dir>/.decodebench.lock`.

The kernel drops a flock when its holder exits, however it exits (`kill -9` included), so a lock file left
behind by a dead process never blocks anyone: the next process locks it again at once. The file holds the
holder's pid, only so that a refusal can say who holds the directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

from decodebench.config import ConfigError

LOCK_FILE = ".decodebench.lock"


class DirectoryBusy(ConfigError):
    """Another live process writes into the directory; str() is one line naming it and the holder's pid."""


class DirLock:
    """`with DirLock(path, "sweep.dir"):` holds the directory until the block ends (or the process does).

    A flock belongs to one open file, so a second DirLock on the same directory is refused even inside the
    same process."""

    def __init__(self, directory: str | os.PathLike, key: str):
        self.dir = Path(directory)
        self.key = key
        self.fd: Optional[int] = None

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryBusy(f"{self.key} {self.dir} is in use by another decodebench process (pid {holder}); "
                                f"wait for it to finish, or give a different {self.key}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock; the file stays, harmless
            self.fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    except OSError:
        return "unknown"
