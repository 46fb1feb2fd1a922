"""Checks of a local dataset file before a parser reads it (data.py): a file from anyone is data.

- UTF-8 throughout, the first bad byte named by line (the parsers report an offset into a chunk);
- JSON nested at most `untrusted.MAX_DEPTH` deep (a parser's recursion could crash the process);
- a CSV/TSV header that names each column once (the parser silently keeps one of two `prompt` columns);
- a `datasets` cache that can be written (else the parser's PermissionError reads like a bad dataset.path).
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from decodebench import untrusted


class SettingError(ValueError):
    """A message that already names its setting (not a dataset.<key>): passed on as it is."""


def scan_data_file(path: Path, builder: str, sep: str = ",") -> None:
    """ValueError 'dataset.path: FILE:LINE: ...' for a file no parser should be handed (text formats only:
    a parquet file is binary, its reader checks it)."""
    if builder not in ("json", "csv", "text"):
        return
    try:
        if builder == "json" and path.suffix.lower() == ".json":
            untrusted.scan_jsonl(path, whole=True)
            return
        first = None
        for n, line in untrusted.jsonl_lines(path):
            if builder == "json" and untrusted.too_deep(line) is not None:
                raise ValueError(f"{path}:{n}: JSON nested more than {untrusted.MAX_DEPTH} levels deep; "
                                 f"this is not a dataset row")
            if first is None:
                first = line
        if builder == "csv" and first is not None:
            _check_header(path, first, sep)
    except ValueError as e:
        raise ValueError(f"dataset.path: {e}") from None


def _check_header(path: Path, first: str, sep: str) -> None:
    header = next(csv.reader(io.StringIO(first), delimiter=sep), [])
    seen: set = set()
    for col in header:
        if col in seen:
            raise ValueError(f"{path}:1: column {col!r} appears twice in the header; rename one (columns are read "
                             f"by name, so one of the two would be dropped)")
        seen.add(col)


def check_datasets_cache() -> None:
    """The `datasets` library writes its cache under HF_DATASETS_CACHE (default ~/.cache/huggingface)."""
    import datasets

    where = Path(datasets.config.HF_DATASETS_CACHE)
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        raise SettingError(f"HF_DATASETS_CACHE: cannot write the datasets cache in {where} ({e.strerror or e}); "
                           f"set the environment variable HF_DATASETS_CACHE (or HF_HOME, or HOME) to a writable "
                           f"directory") from None
