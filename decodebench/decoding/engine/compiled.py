"""`compile=true`: the checks before a model loads, and the compiled forward of runtimes with their own.

The plain runtime (sampling, greedy, classifier-free guidance) compiles its whole decode step instead
(`step.py`: chain, sample, bookkeeping, KV write and forward in one graph per batch-size bucket).
Runtimes with their own forward (DoLa, contrastive decoding) compile that forward here: the step has
fixed shapes (the attention window is the whole static buffer, the write column a device tensor), so one
graph per batch shape serves every step. Compilation happens at the first step of each shape; its time is
counted apart (`compile_time_s`) and taken out of the generation time.

If compiling fails, the engine says so once and runs eager: the tokens are the same either way (the
compiled step computes the same operations), which `tests/test_compile.py` checks.
"""

from __future__ import annotations

import logging
import shutil
import time

import torch

log = logging.getLogger("decodebench")


def check_compile(device: str) -> None:
    """Refuse `compile=true` where torch.compile cannot work, before the model loads (one line)."""
    if not hasattr(torch, "compile"):
        raise ValueError("compile: this torch has no torch.compile; set compile=false")
    if not str(device).startswith("cuda") and not (shutil.which("c++") or shutil.which("g++")):
        raise ValueError("compile: torch.compile on CPU needs a C++ compiler (install g++), or set compile=false")


def compile_decode(runner, backend: str | None = None) -> float:
    """Swap `runner.decode_fn` for a compiled one; returns 0.0 (compile time is counted per shape)."""
    cuda = runner.device.type == "cuda"
    kw = {"mode": "reduce-overhead"} if cuda and backend is None else {}
    compiled = torch.compile(runner._decode, dynamic=False, backend=backend or "inductor", **kw)
    seen: set = set()
    failed = []

    def decode(tok, pos, mask):
        if failed:
            return runner._decode(tok, pos, mask)
        shape = (tuple(tok.shape), tuple(mask.shape))
        first = shape not in seen
        t0 = time.perf_counter()
        try:
            out = compiled(tok, pos, mask)
        except Exception as e:  # noqa: BLE001 - any compiler failure: say it once, run eager
            failed.append(e)
            log.warning("compile: torch.compile failed (%s: %s); running the step eagerly",
                        type(e).__name__, str(e).splitlines()[0][:200])
            return runner._decode(tok, pos, mask)
        if first:
            seen.add(shape)
            if cuda:
                torch.cuda.synchronize()
            runner.compile_s += time.perf_counter() - t0
        return out

    runner.decode_fn = decode
    return 0.0
