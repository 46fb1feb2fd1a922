"""W&B sink: a view of the records on disk, at the edge. A failure here never costs a run its results.

Default mode is offline: the run is written under `<run_dir>/wandb/` and can be uploaded later with
`wandb sync <run_dir>/wandb/offline-run-*`. Online mode waits at most `logger.init_timeout` seconds for the
server, then falls back to the same offline files. Warnings go to the log (stderr), never to stdout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

log = logging.getLogger("decodebench")

TABLE_COLUMNS = ("prompt_id", "sample_index", "prompt", "text", "num_tokens", "finish_reason", "reference")


def _init(wandb, lcfg, run_dir, **kw):
    """wandb.init; online mode waits at most logger.init_timeout seconds for the server, then the run is
    written offline under the run directory instead (upload it later with `wandb sync`)."""
    common = dict(project=lcfg.project, entity=lcfg.entity, dir=str(run_dir), tags=list(lcfg.tags),
                  reinit="finish_previous", **kw)
    if lcfg.mode != "online":
        return wandb.init(mode=lcfg.mode, **common)
    timeout = float(lcfg.get("init_timeout", 30.0))
    try:
        return wandb.init(mode="online", settings=wandb.Settings(init_timeout=timeout), **common)
    except Exception as e:  # noqa: BLE001 - no server, no key, a timeout: the run is still logged, offline
        why = " ".join(str(e).split()).split(" Consider ")[0][:200]  # wandb's advice names its own API
        log.warning("W&B online init failed within logger.init_timeout=%gs (%s: %s); logging offline under "
                    "%s/wandb instead, upload later with `wandb sync`", timeout, type(e).__name__, why, run_dir)
        return wandb.init(mode="offline", **common)


def _log(cfg, run_dir, write, *, group, job_type, name, config) -> Optional[str]:
    """Open a W&B run under `run_dir`, let `write(run, wandb)` log into it, close it; never raises."""
    lcfg = cfg.logger
    if lcfg.name == "none" or lcfg.mode == "disabled":
        return None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = _init(wandb, lcfg, run_dir, group=group or lcfg.group, job_type=job_type, name=name, config=config)
        try:
            write(run, wandb)
            path = run.dir
        finally:
            run.finish()
        return str(Path(path).parent)
    except Exception as e:  # noqa: BLE001 - logging is best effort; local results already exist
        log.warning("W&B logging failed (%s: %s); local results are in %s", type(e).__name__, e, run_dir)
        return None


def log_run(cfg, run_dir: str | os.PathLike, metrics: dict, records: list[dict], *,
            group: Optional[str] = None, job_type: Optional[str] = None, name: Optional[str] = None,
            extra_tables: Optional[dict] = None) -> Optional[str]:
    """Log config, metrics and a table of sample generations; returns the W&B run dir or None."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    def write(run, wandb):
        run.log(numbers)
        for k, v in numbers.items():
            run.summary[k] = v
        rows = [[r.get(c) for c in TABLE_COLUMNS] for r in records[: int(cfg.logger.num_samples)]]
        run.log({"generations": wandb.Table(columns=list(TABLE_COLUMNS), data=rows)})
        for key, (columns, data) in (extra_tables or {}).items():
            run.log({key: wandb.Table(columns=list(columns), data=data)})

    return _log(cfg, run_dir, write, group=group, job_type=job_type or cfg.strategy.name, name=name,
                config=OmegaConf.to_container(cfg, resolve=True))


def log_table(cfg, run_dir: str | os.PathLike, key: str, columns: list, rows: list, *,
              group: Optional[str] = None, job_type: Optional[str] = None, name: Optional[str] = None,
              config: Optional[dict] = None) -> Optional[str]:
    """Log one table as a W&B run of its own (a sweep's leaderboard); returns the W&B run dir or None."""

    def write(run, wandb):
        run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    return _log(cfg, run_dir, write, group=group, job_type=job_type, name=name, config=config)
