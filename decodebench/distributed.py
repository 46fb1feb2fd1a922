"""Data parallel across processes: under `torchrun` (or `accelerate launch`, or a SLURM job with several
tasks), rank 0 runs the command as one process would; every other rank only serves rank 0's generate
calls.

    torchrun --nproc-per-node 4 -m decodebench strategy=topp [sweep] ...

Each `generate` call on rank 0 is broadcast to the workers with its requests (a sweep's fused group
included); every rank generates its own shard (whole prompts, contiguous) with the same batch size on
its own device; rank 0 gathers the outputs in request order, hands them to `on_batch`, and writes the
one run directory. Because a request's tokens depend only on (seed, prompt, sample, step), the tokens
equal a one-process run. A rank that fails sends its error; rank 0 raises it after the gather (so no
rank is left waiting), the run fails with it, and no metrics.json is written (a run is complete only with
one). Workers never touch Hydra or the disk.
"""

from __future__ import annotations

import logging
import os
import dataclasses
from dataclasses import replace
from typing import Any, Callable, Optional

log = logging.getLogger("decodebench")

_SAID_EMPTY = False


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) outside one."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_device(device: str) -> str:
    """Each rank on its own GPU: cuda -> cuda:LOCAL_RANK under a launcher; cpu stays cpu."""
    if device == "cuda" and world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


class RankFailed(RuntimeError):
    pass


def shard(reqs: list, world_size: int) -> list[list[int]]:
    """Request indices per rank: whole prompts (a search runs over all of a prompt's rows; a prompt is
    prefilled once), contiguous, balanced by rows. Ranks beyond the number of prompts get nothing."""
    blocks: list[list[int]] = []
    for i, r in enumerate(reqs):
        if blocks and reqs[blocks[-1][-1]].prompt_id == r.prompt_id:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    out: list[list[int]] = [[] for _ in range(world_size)]
    done = 0
    for b in blocks:  # rank k takes the blocks that start in its share of the rows
        k = min(done * world_size // max(len(reqs), 1), world_size - 1)
        out[k].extend(b)
        done += len(b)
    return out


def merge_stats(parts: list):
    """One BatchStats for the ranks together: counts add up; time is the slowest rank's (they ran at once)."""
    from decodebench.decoding.engine.batch import BatchStats

    total = BatchStats()
    for s in parts:
        for f in ("rows", "prompt_tokens", "generated_tokens", "forward_passes", "tokens_processed",
                  "row_steps", "steps"):
            setattr(total, f, getattr(total, f) + getattr(s, f))
        total.ttft_s += s.ttft_s
        total.step_ms += s.step_ms
    live = [s for s in parts if s.rows] or parts
    return replace(total, decode_s=max(s.decode_s for s in live), compile_s=max(s.compile_s for s in live),
                   chain=live[0].chain, batch_size=max(s.batch_size for s in live),
                   kv_bytes=max(s.kv_bytes for s in live))


def _run_shard(model, tok, reqs, mine, spec, kw, progress=None):
    from decodebench.decoding.engine import generate

    try:
        outs, stats = generate(model, tok, [reqs[i] for i in mine], spec, progress=progress, **kw)
        return mine, outs, stats, None
    except Exception as e:  # noqa: BLE001 - sent to rank 0, which fails the run with it
        return mine, None, None, f"{type(e).__name__}: {e}"


def generate(model, tok, reqs: list, spec, *, model_cfg, dtype: str, plugins=(),
             on_batch: Optional[Callable] = None, progress=None, **kw):
    """engine.generate, sharded over the ranks when a launcher started several; same return value."""
    from decodebench.decoding.engine import generate as engine_generate

    if not active():
        return engine_generate(model, tok, reqs, spec, on_batch=on_batch, progress=progress, **kw)
    import torch.distributed as dist

    n = dist.get_world_size()
    shards = shard(reqs, n)
    global _SAID_EMPTY
    if not _SAID_EMPTY and any(not s for s in shards):
        _SAID_EMPTY = True
        log.warning("distributed: %d of %d ranks have no prompts to generate (world size %d, %d requests)",
                    sum(not s for s in shards), n, n, len(reqs))
    mcfg = dataclasses.asdict(model_cfg) if not isinstance(model_cfg, dict) else model_cfg
    job = dict(reqs=reqs, shards=shards, spec=spec, kw=kw, model=mcfg, dtype=dtype, plugins=list(plugins))
    dist.broadcast_object_list([("generate", job)], src=0)
    mine = _run_shard(model, tok, reqs, shards[0], spec, kw, progress)
    parts: list = [None] * n
    dist.gather_object(mine, parts, dst=0)
    for r, (_, _, _, err) in enumerate(parts):
        if err is not None:
            raise RankFailed(f"rank {r} of {n} failed: {err}")
    results: list = [None] * len(reqs)
    for r, (idx, outs, _, _) in enumerate(parts):
        if idx:
            for i, o in zip(idx, outs):
                results[i] = o
            if on_batch is not None:
                on_batch(list(idx), list(outs))
            if progress is not None and r:  # rank 0's own rows were counted as they finished
                progress.update(len(idx))
    return results, merge_stats([p[2] for p in parts])


def serve(device: str) -> None:
    """A worker's whole life: load the model each job names (once), generate its shard, send it back."""
    import torch.distributed as dist

    from decodebench import models, run_state

    rank = dist.get_rank()
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        cmd, job = box[0]
        if cmd == "stop":
            return
        try:
            from decodebench.plugins import load_plugins

            load_plugins(job["plugins"])  # the user's transforms, by the names the spec uses
            mcfg = models.ModelConfig(**job["model"])
            model, tok = run_state.get_model(mcfg, device, job["dtype"])
            res = _run_shard(model, tok, job["reqs"], job["shards"][rank], job["spec"], job["kw"])
        except Exception as e:  # noqa: BLE001 - e.g. the model does not fit this rank's device
            res = (job["shards"][rank], None, None, f"{type(e).__name__}: {e}")
        dist.gather_object(res, None, dst=0)


def _init(device_hint: str) -> None:
    import torch
    import torch.distributed as dist

    backend = os.environ.get("DECODEBENCH_DIST_BACKEND") or (
        "nccl" if torch.cuda.is_available() and device_hint != "cpu" else "gloo")
    if torch.cuda.is_available() and backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # object collectives only (a few per batch of requests): gloo serves them on CPU, nccl on GPUs
    dist.init_process_group(backend=backend)


def launch(fn: Callable[[], Any], device_hint: str = "auto") -> Any:
    """Run `fn` (the verb) on rank 0 and serve it on the others (which return None); a one-process call
    when no launcher started several. Rank 0 always releases the workers, whatever way `fn` ends."""
    rank, size = world()
    import torch.distributed as dist

    if size <= 1 or (dist.is_available() and dist.is_initialized()):  # one process, or launched already
        return fn()

    _init(device_hint)
    try:
        if rank != 0:
            from decodebench import models

            serve(rank_device(models.pick_device(device_hint)))
            return None
        try:
            return fn()
        finally:
            dist.broadcast_object_list([("stop", None)], src=0)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def device_arg(argv: list[str]) -> str:
    """The `device=` override of a command line (the workers need it before any config is composed)."""
    for a in argv:
        if a.startswith("device="):
            return a.split("=", 1)[1]
    return "auto"


def slurm_env() -> None:
    """In a SLURM job with several tasks (Hydra's submitit launcher, tasks_per_node > 1), export the
    torch.distributed variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) so `launch` sees the ranks."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", 1)) <= 1:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
