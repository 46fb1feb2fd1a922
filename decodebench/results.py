"""Result records on disk: generations.jsonl, metrics.json, run.json; atomic writes; reading them back.

One record type, `GenerationRecord` (a line of generations.jsonl), and one reader of a run directory,
`read_run` -> `RunDir` (config.yaml, run.json, metrics.json, error.json; generations on demand): the
runner writes them, the scorers, the leaderboard and the W&B sink read them.

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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

GENERATIONS = "generations.jsonl"
PARTIAL = "generations.partial.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
CONFIG = "config.yaml"
ERROR = "error.json"  # a sweep point that failed: {"error": one line, "point": its settings}


@dataclass(frozen=True, kw_only=True)
class GenerationRecord:
    """One generation: a line of generations.jsonl. `token_ids` are the generated tokens only (EOS included
    when generated, no padding); `prompt_token_ids` exactly what the model was fed. Fields a source lacks
    (a released file has no token ids) are None."""

    prompt_id: Any
    prompt: Optional[str] = None
    prompt_token_ids: Optional[list[int]] = None
    sample_index: int = 0
    text: str
    token_ids: Optional[list[int]] = None
    num_tokens: Optional[int] = None
    finish_reason: Optional[str] = None  # eos, length, stop, time or a stopping criterion's name
    reference: Optional[str] = None
    category: Optional[str] = None
    score: Optional[float] = None  # search methods: the hypothesis' score
    telemetry: Optional[dict] = None  # record=[...]: per-step lists
    extra: dict = field(default_factory=dict)  # a method's own fields (stream_*, gumbel, ...), flat on disk

    def to_json(self) -> dict:
        """The line on disk: the fields in order, `score`/`telemetry` only when set, then `extra` flat."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _OPTIONAL_KEYS + ("extra",)}
        d.update({k: getattr(self, k) for k in _OPTIONAL_KEYS if getattr(self, k) is not None})
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "GenerationRecord":
        """A line read back: the known fields by name, everything else into `extra`."""
        missing = [k for k in ("prompt_id", "text") if k not in d]
        if missing:
            raise ValueError(f"a generation record needs {missing[0]!r} (fields: {', '.join(map(str, d)) or 'none'})")
        return cls(**{k: d[k] for k in _FIELDS if k in d}, extra={k: v for k, v in d.items() if k not in _FIELDS})


_OPTIONAL_KEYS = ("score", "telemetry")
_FIELDS = tuple(f.name for f in fields(GenerationRecord) if f.name != "extra")


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
    from decodebench.preemption import deferred

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred(), naming(path):
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

    name = GENERATIONS  # the final file's name (subclasses that set up their own files keep this one)

    def __init__(self, run_dir: str | os.PathLike, name: str = GENERATIONS):
        self.dir, self.name = Path(run_dir), name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partial = self.dir / (PARTIAL if name == GENERATIONS else f"{Path(name).stem}.partial.jsonl")
        self.partial.unlink(missing_ok=True)
        self.f = open(self.partial, "w", encoding="utf-8")

    def write(self, records: Iterable[Union[GenerationRecord, Mapping]]) -> None:
        from decodebench.preemption import deferred

        with deferred(), naming(self.partial):  # a SIGTERM waits until the batch is on disk
            for r in records:
                line = r.to_json() if isinstance(r, GenerationRecord) else r
                self.f.write(json.dumps(clean(line), ensure_ascii=False) + "\n")
            self.f.flush()

    def close(self, sort_key=None) -> Path:
        """Rewrite in a stable order (prompt order, then sample index) and rename into place."""
        with naming(self.partial):
            self.f.close()
        recs = read_jsonl(self.partial)
        if sort_key is not None:
            recs.sort(key=sort_key)
        final = self.dir / self.name
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


def iter_generations(run_dir: str | os.PathLike) -> Iterator[GenerationRecord]:
    """A run's records one by one (a report reads a few samples of a large file); each line is checked
    (decodebench/untrusted.py) and a bad one is a ValueError naming the file and line."""
    from decodebench.untrusted import read_jsonl as read_checked

    path = Path(run_dir) / GENERATIONS
    for n, d in read_checked(path, root=Path(run_dir)):
        try:
            yield GenerationRecord.from_json(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: {e}") from None


def read_generations(run_dir: str | os.PathLike) -> list[GenerationRecord]:
    return list(iter_generations(run_dir))


def read_metrics(run_dir: str | os.PathLike) -> dict:
    from decodebench.untrusted import read_json

    return read_json(Path(run_dir) / METRICS, root=Path(run_dir), what=" of metric names and values")


def is_complete(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / METRICS).is_file() and (Path(run_dir) / GENERATIONS).is_file()


@dataclass(frozen=True)
class RunDir:
    """One result directory as written by a run, a sweep point or the score verb. `metrics` is None until
    the run is complete; `error` is set for a sweep point that failed; `config` is None when the
    directory has no config.yaml (then run.json says what ran)."""

    dir: Path
    config: Optional[dict]
    info: dict
    metrics: Optional[dict]
    error: Optional[dict]

    @property
    def complete(self) -> bool:
        return self.metrics is not None

    @property
    def strategy(self) -> Optional[str]:
        name = ((self.config or {}).get("strategy") or {}).get("name") or (self.info.get("strategy") or {}).get("name")
        return None if name is None else str(name)

    @property
    def seed(self) -> Optional[int]:
        return (self.config or {}).get("seed", self.info.get("seed"))

    def generations(self) -> list[GenerationRecord]:
        return read_generations(self.dir)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory that holds a run's results, finished or not (metrics.json, error.json or run.json)."""
    return any((Path(path) / f).is_file() for f in (METRICS, ERROR, RUN_INFO))


def read_run(path: str | os.PathLike) -> RunDir:
    """Everything small in a result directory; the generations are read on demand. Each file is data from
    whoever wrote the directory: checked for shape, encoding, depth and links out (decodebench/untrusted.py);
    a bad one is a ValueError naming the file."""
    from decodebench.untrusted import read_json, read_yaml

    d = Path(path)

    def load(name: str) -> Any:
        f = d / name
        if not (f.is_file() or f.is_symlink()):
            return None
        obj = read_yaml(f, root=d) if name == CONFIG else read_json(f, root=d)
        for key, kind in _NESTED.get(name, {}).items():
            if isinstance(obj, dict) and obj.get(key) is not None and not isinstance(obj[key], kind):
                raise ValueError(f"{f}: {key!r} must be {_KIND[kind]}, got {type(obj[key]).__name__}; this is not a "
                                 f"file decodebench wrote (restore it, or remove the directory from the report)")
        return obj

    return RunDir(d, load(CONFIG), load(RUN_INFO) or {}, load(METRICS), load(ERROR))


# The parts of a result file that readers look into: anything else in them is only displayed.
_NESTED = {CONFIG: {"strategy": dict, "model": dict, "dataset": dict},
           RUN_INFO: {"strategy": dict}, ERROR: {"point": dict, "error": str}}
_KIND = {dict: "a mapping", str: "a string"}
