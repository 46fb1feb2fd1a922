"""Write the docs' generated tables from their sources, so they cannot drift.

    python scripts/gen_docs.py           # rewrite the generated blocks of docs/*.md in place
    python scripts/gen_docs.py --check   # exit 1, naming the page, when a block is out of date (CI, tests)

Sources: the parameter table (`decodebench.decoding.params.PARAMS`), the strategy schema
(`decodebench.config.StrategyConfig`) and the shipped strategies (`conf/strategy/*.yaml`: each file's
settings and its header comment). A block sits in a page between
`<!-- generated: NAME (scripts/gen_docs.py) -->` and `<!-- end generated: NAME -->`; the prose around it
is written by hand. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's decodebench, wherever the script is run from

START = "<!-- generated: {name} (scripts/gen_docs.py) -->"
END = "<!-- end generated: {name} -->"


def cell(text) -> str:
    """One Markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(value) -> str:
    return f"`{show(value)}`"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def show(value) -> str:
    """A value as a config file writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (tuple, list, dict)):
        return json.dumps(value, ensure_ascii=False, default=list)
    return str(value)


def type_name(tp) -> str:
    """`Optional[List[Any]]` -> `list of any`, for the reader of a table (null is always accepted)."""
    if tp is typing.Any:
        return "any"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin is list:
        return "list of " + type_name(args[0]) if args else "list"
    if origin is dict:
        return f"dict {type_name(args[0])} -> {type_name(args[1])}" if args else "dict"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return tp.__name__ if isinstance(tp, type) else str(tp)


# --------------------------------------------------------------------------- the parameter table
def accepts(p) -> str:
    """What values a row takes: its range, its choices, or its type."""
    if p.choices:
        return "one of " + ", ".join(show(c) for c in p.choices)
    if p.kind == "float":
        lo, hi = (show(v) if math.isinf(v) else f"{v:g}" for v in (p.lo, p.hi))
        return ("(" if p.lo_open else "[") + f"{lo}, {hi}" + (")" if p.hi_open else "]")
    if p.kind == "int":
        return f"integer >= {int(p.lo)}"
    if p.kind in ("bool", "str"):
        return {"bool": "true / false", "str": "a string"}[p.kind]
    return type_name(p.config_type) if p.config_type is not None else "see the library"


def acts_on(p) -> str:
    """Where the row's value matters: the warpers' sampled rows, every row, or the generation loop."""
    if p.transform is None:
        return "the loop"
    return ("sampled rows" if p.warper else "every row") + ("" if p.switch else " (tunes it)")


def parameters_block() -> str:
    from decodebench.decoding.params import PARAMS

    rows = [[f"`{p.name}`", accepts(p), code(p.default), ", ".join(code(v) for v in p.off) or "",
             f"`{p.transform}`" if p.transform else "", acts_on(p),
             "yes" if p.sweep else "no", p.hint.strip(" ;()")]
            for p in PARAMS]
    header = ["parameter", "accepts", "default", "off", "transform", "acts on", "sweepable", "note"]
    return table(header, rows)


def loop_options_block() -> str:
    """The strategy keys that are not sampling parameters: the loop's and the search methods' options."""
    from decodebench.config import StrategyConfig
    from decodebench.decoding.params import BY_NAME

    rows = []
    for f in dataclasses.fields(StrategyConfig):
        if f.name in BY_NAME or f.name == "name":
            continue
        if f.default is not dataclasses.MISSING:
            default = show(f.default)
        else:
            made = f.default_factory()  # type: ignore[misc]
            default = show(dataclasses.asdict(made) if dataclasses.is_dataclass(made) else made)
        rows.append([f"`{f.name}`", type_name(f.type), f"`{default}`"])
    return table(["key", "type", "default"], rows)


# --------------------------------------------------------------------------- the shipped strategies
def header_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def strategies_block() -> str:
    import yaml

    rows = []
    for path in sorted((ROOT / "conf" / "strategy").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        cfg = yaml.safe_load(text) or {}
        settings = ", ".join(f"`{k}: {show(v)}`" for k, v in cfg.items() if k not in ("name", "method"))
        rows.append([f"`{path.stem}`", f"`{cfg.get('method', 'sampling')}`", settings or "—",
                     header_comment(text)])
    return table(["strategy", "method", "settings (its config file)", "what it does"], rows)


BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "parameters": ("docs/parameters.md", parameters_block),
    "strategy-options": ("docs/parameters.md", loop_options_block),
    "strategies": ("docs/strategies.md", strategies_block),
}


# --------------------------------------------------------------------------- pages
def fill(page: str, name: str, body: str) -> str:
    """`page` with block `name` replaced by `body`; ValueError when the page lacks its markers."""
    start, end = START.format(name=name), END.format(name=name)
    i, j = page.find(start), page.find(end)
    if i < 0 or j < i:
        raise ValueError(f"no block {name!r}: the page needs the lines {start!r} and {end!r}")
    return page[: i + len(start)] + "\n" + body + "\n" + page[j:]


def rendered() -> dict[Path, str]:
    """Every page with a generated block, as it should read now."""
    pages: dict[Path, str] = {}
    for name, (rel, make) in BLOCKS.items():
        path = ROOT / rel
        text = pages.get(path, path.read_text(encoding="utf-8"))
        try:
            pages[path] = fill(text, name, make())
        except ValueError as e:
            raise SystemExit(f"error: {rel}: {e}") from None
    return pages


def stale() -> list[str]:
    """Pages whose generated blocks differ from their sources."""
    return [str(p.relative_to(ROOT)) for p, text in rendered().items() if p.read_text(encoding="utf-8") != text]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only say which pages are out of date (exit 1)")
    args = ap.parse_args(argv)
    if args.check:
        old = stale()
        for rel in old:
            print(f"error: {rel} is out of date with its sources; run: python scripts/gen_docs.py", file=sys.stderr)
        return 1 if old else 0
    for path, text in rendered().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
