"""Files from others are data: run directories, datasets and generations are read, never executed.

Every reader here refuses in one line (a ValueError) that names the file, with its line where there is one:
- a file that is not UTF-8 (the line of the first bad byte);
- JSON nested deeper than `MAX_DEPTH` (checked before parsing: a parser's recursion may crash the process);
- invalid JSON or YAML, and YAML tags (`!!python/object`: `yaml.safe_load` refuses them, we say where);
- a file of the wrong shape (metrics.json must be an object, ...);
- a symlink that leads out of the directory being read (`root`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

MAX_DEPTH = 200  # no result file, dataset row or config a run writes comes near this
_CHUNK = 1 << 24
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
SHAPES = {dict: "a mapping ({key: value, ...})", list: "a list ([...])"}


def line_of(text: str | bytes, offset: int) -> int:
    nl = b"\n" if isinstance(text, bytes) else "\n"
    return text.count(nl, 0, offset) + 1


def too_deep(text: str, limit: int = MAX_DEPTH) -> Optional[int]:
    """The offset where `text` (JSON, or YAML flow style) nests deeper than `limit` brackets, else None."""
    if text.count("[") + text.count("{") <= limit:
        return None  # cannot nest deeper than it has brackets: the common case costs two counts
    stripped = _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', text)  # same offsets
    depth = 0
    for m in _BRACKET.finditer(stripped):
        depth += 1 if m.group() in "[{" else -1
        if depth > limit:
            return m.start()
    return None


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}:{line_of(data, e.start)}: not UTF-8 text (byte {data[e.start]:#04x}); convert "
                         f"the file to UTF-8, e.g. with iconv -t UTF-8") from None


def check_inside(path: Path, root: Optional[Path]) -> None:
    """Refuse a file that is (or passes through) a symlink leading out of `root`."""
    if root is None:
        return
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        raise ValueError(f"{path}: is a link to {real}, outside {root}; a run directory's files must be in it "
                         f"(replace the link with the file)")


def loads_json(text: str, where: str, first_line: int = 1) -> Any:
    """json.loads with the depth bounded; errors name `where` and the line."""
    deep = too_deep(text)
    if deep is not None:
        raise ValueError(f"{where}:{first_line + line_of(text, deep) - 1}: JSON nested more than {MAX_DEPTH} levels "
                         f"deep; this is not a file decodebench writes or reads")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}:{first_line + e.lineno - 1}: invalid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{where}:{first_line}: JSON nested too deep to read") from None


def _shape(obj: Any, expect: Optional[type], where: str, what: str) -> Any:
    if expect is not None and not isinstance(obj, expect):
        got = type(obj).__name__ if obj is not None else "empty"
        raise ValueError(f"{where}: must hold {SHAPES.get(expect, expect.__name__)}{what}, got {got}; this is not "
                         f"a file decodebench wrote (restore it, or remove the directory from the report)")
    return obj


def read_text(path: Path, root: Optional[Path] = None) -> str:
    check_inside(path, root)
    with open(path, "rb") as f:
        return decode_utf8(f.read(), str(path))


def read_json(path: str | os.PathLike, root: Optional[Path] = None, expect: Optional[type] = dict,
              what: str = "") -> Any:
    """A JSON file, checked as the module docstring says; `expect`: the type its top level must have."""
    path = Path(path)
    return _shape(loads_json(read_text(path, root), str(path)), expect, str(path), what)


def read_yaml(path: str | os.PathLike, root: Optional[Path] = None, expect: Optional[type] = dict) -> Any:
    """A YAML file with yaml.safe_load: tags are refused in one line naming the file and line."""
    import yaml

    path = Path(path)
    text = read_text(path, root)
    deep = too_deep(text)
    if deep is not None:
        raise ValueError(f"{path}:{line_of(text, deep)}: nested more than {MAX_DEPTH} levels deep")
    try:
        obj = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{line}: {' '.join(str(e.problem).split())}; decodebench reads plain YAML only "
                         f"(no tags such as !!python/object): remove the tag") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{line}: invalid YAML ({' '.join(str(getattr(e, 'problem', e)).split())})") from None
    return None if obj is None else _shape(obj, expect, str(path), "")


def jsonl_lines(path: str | os.PathLike, root: Optional[Path] = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, decoded as UTF-8 chunk by chunk (errors name the line)."""
    path = Path(path)
    check_inside(path, root)
    n, rest = 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            data = rest + chunk
            cut = len(data) if not chunk else data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            if data:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{n + line_of(data, e.start)}: not UTF-8 text (byte {data[e.start]:#04x}); "
                                     f"convert the file to UTF-8, e.g. with iconv -t UTF-8") from None
                for line in text.splitlines():
                    n += 1
                    if line.strip():
                        yield n, line.lstrip("\ufeff") if n == 1 else line
            if not chunk:
                return


def read_jsonl(path: str | os.PathLike, root: Optional[Path] = None,
               expect: Optional[type] = dict) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each line of a JSONL file, parsed and shape-checked; errors name the file and
    line."""
    for n, line in jsonl_lines(path, root):
        yield n, _shape(loads_json(line, str(path), n), expect, f"{path}:{n}", " per line")


def scan_jsonl(path: str | os.PathLike, whole: bool = False) -> None:
    """Check a dataset file before a parser reads it: UTF-8, and nesting depth per line (or for the whole
    file, `whole`: a .json document). Parses nothing."""
    where = str(path)
    if whole:
        text = read_text(Path(path))
        deep = too_deep(text)
        if deep is not None:
            raise ValueError(f"{where}:{line_of(text, deep)}: JSON nested more than {MAX_DEPTH} levels deep")
        return
    for n, line in jsonl_lines(path):
        if too_deep(line) is not None:
            raise ValueError(f"{where}:{n}: JSON nested more than {MAX_DEPTH} levels deep")
