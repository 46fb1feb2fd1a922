"""Result records on disk: generations.jsonl, metrics.json, run.json; atomic writes; reading them back.

A run's directory is complete exactly when `metrics.json` exists: it is written last, atomically
(temporary file + rename). Generations are appended batch by batch to `generations.partial.jsonl`, so a
failure late in a run keeps every finished batch; the file is renamed to `generations.jsonl` when the
last batch is in.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

GENERATIONS = "generations.jsonl"
PARTIAL = "generations.partial.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
RECORD_FIELDS = ("prompt_id", "prompt", "prompt_token_ids", "sample_index", "text", "token_ids",
                 "num_tokens", "finish_reason", "reference")


def clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than invalid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(clean(obj), f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class GenerationsWriter:
    """Appends records batch by batch; `close()` makes generations.jsonl appear atomically."""

    name = GENERATIONS  # the final file's name (subclasses that set up their own files keep this one)

    def __init__(self, run_dir: str | os.PathLike, name: str = GENERATIONS):
        self.dir, self.name = Path(run_dir), name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partial = self.dir / (PARTIAL if name == GENERATIONS else f"{Path(name).stem}.partial.jsonl")
        self.partial.unlink(missing_ok=True)
        self.f = open(self.partial, "w", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        for r in records:
            self.f.write(json.dumps(clean(r), ensure_ascii=False) + "\n")
        self.f.flush()

    def close(self, sort_key=None) -> Path:
        """Rewrite in a stable order (prompt order, then sample index) and rename into place."""
        self.f.close()
        recs = read_jsonl(self.partial)
        if sort_key is not None:
            recs.sort(key=sort_key)
        final = self.dir / self.name
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".gen.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, final)
        self.partial.unlink(missing_ok=True)
        return final


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_generations(run_dir: str | os.PathLike) -> list[dict]:
    return read_jsonl(Path(run_dir) / GENERATIONS)


def read_metrics(run_dir: str | os.PathLike) -> dict:
    with open(Path(run_dir) / METRICS, encoding="utf-8") as f:
        return json.load(f)


def is_complete(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / METRICS).is_file() and (Path(run_dir) / GENERATIONS).is_file()
