"""W&B sink: a view of the records on disk, at the edge. A failure here never costs a run its results.

It takes plain records: the logger settings as a dict (`logger` of the config) and a run directory as
`decodebench.results.read_run` reads it; it never sees Hydra's config objects.

Default mode is offline: the run is written under `<run_dir>/wandb/` and can be uploaded later with
`wandb sync <run_dir>/wandb/offline-run-*`. Online mode waits at most `logger.init_timeout` seconds for the
server, then falls back to the same offline files. Warnings go to the log (stderr), never to stdout.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Mapping, Optional

from decodebench.results import GenerationRecord, RunDir

log = logging.getLogger("decodebench")

# The generations table: the record's fields, less the long per-token lists.
TABLE_COLUMNS = tuple(f.name for f in fields(GenerationRecord)
                      if f.name not in ("prompt_token_ids", "token_ids", "telemetry", "extra", "category", "score"))


def enabled(logger: Mapping) -> bool:
    return logger.get("name") != "none" and logger.get("mode") != "disabled"


def _init(wandb, logger: Mapping, run_dir, **kw):
    """wandb.init; online mode waits at most logger.init_timeout seconds for the server, then the run is
    written offline under the run directory instead (upload it later with `wandb sync`)."""
    common = dict(project=logger.get("project"), entity=logger.get("entity"), dir=str(run_dir),
                  tags=list(logger.get("tags") or ()), reinit="finish_previous", **kw)
    if logger.get("mode") != "online":
        return wandb.init(mode=logger.get("mode"), **common)
    timeout = float(logger.get("init_timeout", 30.0))
    try:
        return wandb.init(mode="online", settings=wandb.Settings(init_timeout=timeout), **common)
    except Exception as e:  # noqa: BLE001 - no server, no key, a timeout: the run is still logged, offline
        why = " ".join(str(e).split()).split(" Consider ")[0][:200]  # wandb's advice names its own API
        log.warning("W&B online init failed within logger.init_timeout=%gs (%s: %s); logging offline under "
                    "%s/wandb instead, upload later with `wandb sync`", timeout, type(e).__name__, why, run_dir)
        return wandb.init(mode="offline", **common)


def _log(logger: Mapping, run_dir, write, *, group, job_type, name, config) -> Optional[str]:
    """Open a W&B run under `run_dir`, let `write(run, wandb)` log into it, close it; never raises."""
    if not enabled(logger):
        return None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = _init(wandb, logger, run_dir, group=group or logger.get("group"), job_type=job_type, name=name,
                    config=config)
        try:
            write(run, wandb)
            path = run.dir
        finally:
            run.finish()
        return str(Path(path).parent)
    except Exception as e:  # noqa: BLE001 - logging is best effort; local results already exist
        log.warning("W&B logging failed (%s: %s); local results are in %s", type(e).__name__, e, run_dir)
        return None


def log_run(logger: Mapping, run: RunDir, records: Optional[list[GenerationRecord]] = None, *,
            group: Optional[str] = None, job_type: Optional[str] = None, name: Optional[str] = None,
            extra_tables: Optional[dict] = None) -> Optional[str]:
    """Log a run directory's config, metrics and a table of sample generations (`records`, else the
    directory's own); returns the W&B run dir or None."""
    numbers = {k: v for k, v in (run.metrics or {}).items() if isinstance(v, (int, float))}

    def write(run_, wandb):
        run_.log(numbers)
        for k, v in numbers.items():
            run_.summary[k] = v
        recs = records if records is not None else run.generations()
        rows = [[getattr(r, c) for c in TABLE_COLUMNS] for r in recs[: int(logger.get("num_samples") or 0)]]
        run_.log({"generations": wandb.Table(columns=list(TABLE_COLUMNS), data=rows)})
        for key, (columns, data) in (extra_tables or {}).items():
            run_.log({key: wandb.Table(columns=list(columns), data=data)})

    return _log(logger, run.dir, write, group=group, job_type=job_type or run.strategy, name=name,
                config=run.config)


def log_table(logger: Mapping, run_dir: str | os.PathLike, key: str, columns: list, rows: list, *,
              group: Optional[str] = None, job_type: Optional[str] = None, name: Optional[str] = None,
              config: Optional[dict] = None) -> Optional[str]:
    """Log one table as a W&B run of its own (a sweep's leaderboard); returns the W&B run dir or None."""

    def write(run, wandb):
        run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    return _log(logger, run_dir, write, group=group, job_type=job_type, name=name, config=config)
