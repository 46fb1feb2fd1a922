"""Result records on disk: generations.jsonl, metrics.json, run.json; atomic writes; reading them back.

A run's directory is complete exactly when `metrics.json` exists: it is written last, atomically
(temporary file + rename). Generations are appended batch by batch to `generations.partial.jsonl`, so a
failure late in a run keeps every finished batch; the file is renamed to `generations.jsonl` when the
last batch is in.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

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


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError from a write (a full disk, a quota) carries no file name: give it `path`, so the one-line
    error the user sees says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def os_error_line(e: OSError) -> str:
    """'out/metrics.json: No space left on device': one line naming the path."""
    where = e.filename if e.filename is not None else "a result file"
    return f"{where}: {e.strerror or type(e).__name__}" + (f" (and {e.filename2})" if e.filename2 else "")


_kept = ["nothing was written yet"]


def note_kept(what: str) -> None:
    """What an interruption now would leave on disk; said by the one line printed on Ctrl-C."""
    _kept[0] = what


def kept() -> str:
    return _kept[0]


def check_writable_dir(key: str, path: str | os.PathLike) -> Optional[str]:
    """None if `path` is (or can be made) a directory we can write into, else one line naming `key`.
    Creates the directory, as the run would a moment later."""
    p = Path(path).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{key}: {parent} is a file, not a directory; give a directory path"
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        return f"{key}: cannot write into {p} ({e.strerror or e}); give a writable directory"
    return None


def write_text(path: str | os.PathLike, text: str) -> None:
    with naming(path):
        Path(path).write_text(text, encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def mkstemp_shared(directory: Path, prefix: str) -> tuple[int, str]:
    """mkstemp, but the file gets the mode an ordinary open() would (0666 less the umask, 0644 typically),
    not mkstemp's private 0600: results are read by others on shared cluster storage."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        fd, tmp = mkstemp_shared(path.parent, f".{path.name}.")
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

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partial = self.dir / PARTIAL
        self.partial.unlink(missing_ok=True)
        self.f = open(self.partial, "w", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        with naming(self.partial):
            for r in records:
                self.f.write(json.dumps(clean(r), ensure_ascii=False) + "\n")
            self.f.flush()

    def close(self, sort_key=None) -> Path:
        """Rewrite in a stable order (prompt order, then sample index) and rename into place."""
        with naming(self.partial):
            self.f.close()
        recs = read_jsonl(self.partial)
        if sort_key is not None:
            recs.sort(key=sort_key)
        final = self.dir / GENERATIONS
        with naming(final):
            fd, tmp = mkstemp_shared(self.dir, ".gen.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    for r in recs:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
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
