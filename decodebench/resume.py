"""Resuming an unfinished result directory: a run given the same `hydra.run.dir`, a sweep point in the same
`sweep.dir`. The rows already on disk are kept and only the missing (prompt_id, sample_index) rows are
generated. A row's tokens do not depend on its batch-mates (each row has its own seed stream), so a resumed
directory holds the same tokens as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decodebench import results
from decodebench.config import ConfigError

# The settings that decide a row's tokens: an unfinished run is resumed only with these unchanged.
SAME_SETTINGS = ("model", "dataset", "strategy", "seed", "record", "plugins", "task")


class ResumeWriter(results.GenerationsWriter):
    """GenerationsWriter that starts from the rows already on disk instead of an empty file."""

    def __init__(self, run_dir: Path, keep: list[dict]):  # noqa: D107 - no super(): it would truncate
        self.dir, self.name = Path(run_dir), results.GENERATIONS
        self.partial = self.dir / results.PARTIAL
        tmp = self.dir / f".{results.PARTIAL}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:  # rewritten whole: drops a line torn by a kill
            for r in keep:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(self.partial)
        self.f = open(self.partial, "a", encoding="utf-8")


def read_partial(run_dir: Path) -> list[dict]:
    """Rows of an unfinished directory: generations.jsonl when it was closed but not scored, then the partial
    file (a last line cut short by a kill is dropped). May hold a row twice; the first copy counts."""
    out = []
    for path in (run_dir / results.GENERATIONS, run_dir / results.PARTIAL):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                break
            if isinstance(row, dict):
                out.append(row)
    return out


def unfinished(run_dir: Path) -> bool:
    """Rows on disk and no metrics.json: a run to resume (a complete one is run again from the start)."""
    return not (run_dir / results.METRICS).is_file() and any(
        (run_dir / f).is_file() for f in (results.PARTIAL, results.GENERATIONS))


def check_same_run(run_dir: Path, cfg: dict) -> None:
    """An unfinished `run_dir` is resumed only by the settings that made its rows (ConfigError otherwise)."""
    if not unfinished(run_dir) or not (run_dir / results.CONFIG).is_file():
        return
    from decodebench.untrusted import read_yaml

    try:
        old = read_yaml(run_dir / results.CONFIG, root=run_dir) or {}
    except ValueError as e:
        raise ConfigError(f"hydra.run.dir: cannot resume: {e}") from None
    for key in SAME_SETTINGS:
        if old.get(key) != cfg.get(key):
            raise ConfigError(f"hydra.run.dir: {run_dir} holds the unfinished rows of a run with other {key} settings "
                              f"(see its config.yaml); resume it with the same settings, or give a new hydra.run.dir")


def split_done(run_dir: Path, reqs: list) -> tuple[list[dict], list[Any]]:
    """(rows on disk that belong to `reqs`, the requests still to generate), for an unfinished run_dir."""
    if not unfinished(run_dir):
        return [], list(reqs)
    todo = {(r.prompt_id, r.sample_index): r for r in reqs}
    keep = [r for r in read_partial(run_dir) if todo.pop((r.get("prompt_id"), r.get("sample_index")), None) is not None]
    return keep, list(todo.values())
