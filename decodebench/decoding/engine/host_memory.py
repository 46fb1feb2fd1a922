"""CPU runs keep freed memory for reuse instead of handing it back to the OS after each step.

glibc serves an allocation above its mmap threshold (at most 32 MiB, and only after a free of that size
has raised it) with a fresh `mmap`, and a fresh mapping is zero-filled page by page on first touch. A wide
running batch makes such tensors every step: `[304, 49152]` float32 logits are 60 MB, and each of the
chain's and the race's passes over them allocates one. Measured on the 2-core CPU machine (docs/performance.md):
allocating and filling one such tensor took 15-19 ms, against 1.5-1.9 ms once freed memory is kept, and a
study's fused batch of 304 rows ran its one-token-per-step points in 31.8 s instead of 41.1 s.

`keep_freed_memory()` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB with glibc's
`mallopt`, once per process, when the engine first runs on a CPU. The cost: the process keeps its peak heap
until it exits, as a long-running server with a pooling allocator does, and a later run in the same process
(a sweep's next fusion group) that reuses kept memory reports only the pages it adds as its peak. `DECODEBENCH_CPU_MALLOC=system`
leaves glibc's defaults alone. On other C libraries (musl, macOS) it does nothing. No token depends on it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int
ENV = "DECODEBENCH_CPU_MALLOC"

_done: bool | None = None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a no-op stub)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Keep freed heap memory for reuse (see the module docstring); True if glibc took both settings.
    Runs once per process; later calls return the first call's answer."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get(ENV, "keep").strip().lower() == "system":
        return _done
    libc = _glibc()
    if libc is None:
        return _done
    # older glibc refuses a threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit): take that then
    ok = any(libc.mallopt(_M_MMAP_THRESHOLD, t) == 1 for t in (MMAP_THRESHOLD, 32 << 20))
    _done = ok and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _done
