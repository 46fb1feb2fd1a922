"""Prompt sets: the embedded JSONL, local files, Hub datasets -> a list of `Prompt` records.

Two stages, so the expensive one can be checked without a model:

* `load_table(cfg)` reads rows with the `datasets` library (no tokenizer, no model), applies `limit` and
  checks the config against the data: every mistake is a one-line `ValueError` that names the
  `dataset.<key>` to change.
* `to_prompts(table, cfg, tokenizer)` turns rows into `Prompt`s; the two tokenizer-dependent steps live here:
  `prefix_tokens` (cut each text to an N-token prefix, the rest is the reference) and `chat_template`.

Local files never touch the network: `datasets`' packaged json/csv/parquet/text builders read them directly,
so they load with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 set or with no network at all. Nothing global
is set here; progress bars are only muted while a local file loads.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, List, Optional

from decodebench.data_files import check_datasets_cache, scan_data_file
from decodebench.registry import did_you_mean

if TYPE_CHECKING:  # `datasets` takes ~1.5 s to import; config.py imports this module for the schema
    import datasets

log = logging.getLogger(__name__)

EMBEDDED_PATH = Path(__file__).parent / "data" / "prompts.jsonl"
SOURCES = ("embedded", "file", "hub")
# file suffix -> the `datasets` packaged builder that reads it (.txt: one row per line, column "text")
FILE_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text",
}
# optional columns: when left at these defaults and absent from the data, ids are generated / categories None
DEFAULT_ID_COLUMN = "id"
DEFAULT_CATEGORY_COLUMN = "category"


@dataclass
class DatasetConfig:
    """The `dataset` config group (Hydra structured config; keys match conf/dataset/*.yaml)."""

    name: str = "embedded"  # "embedded" (shipped prompts), "file" (local JSONL/JSON/CSV/TSV/Parquet/TXT), "hub"
    path: Optional[str] = None  # file path (name=file) or Hub dataset id / local dataset dir (name=hub)
    subset: Optional[str] = None  # Hub config name (name=hub only)
    split: str = "train"  # Hub split; a file or the embedded set has the single split "train"
    prompt_column: str = "prompt"
    reference_column: Optional[str] = None
    id_column: Optional[str] = DEFAULT_ID_COLUMN  # null, or the default "id" absent -> ids "0000", "0001", ...
    category_column: Optional[str] = DEFAULT_CATEGORY_COLUMN  # null, or the default absent -> category None
    negative_prompt_column: Optional[str] = None  # a negative prompt per row (classifier-free guidance)
    limit: Optional[int] = None  # keep the first N rows
    prefix_tokens: Optional[int] = None  # N-token prefix as prompt, the rest as reference; shorter rows dropped
    chat_template: bool = False  # wrap each prompt as a user message (add_generation_prompt=True)
    system_prompt: Optional[str] = None  # a system message before it; needs chat_template=true
    truncate: Optional[str] = None  # "left": cut prompts too long for the model to their last tokens; null: refuse
    empty_prompts: str = "error"  # an empty prompt is refused ("error") or left out and counted ("skip")

    def __post_init__(self) -> None:
        check_config(self)


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str  # what the model is given (after prefix truncation and the chat template)
    category: Optional[str]
    reference: Optional[str]  # a human continuation, for scorers that compare against one
    negative: Optional[str] = None  # negative_prompt_column's text, chat template applied as to `text`


def check_config(cfg: Any) -> None:
    """Checks that need no data. Accepts a DatasetConfig or anything with its attributes."""
    name, path = cfg.name, cfg.path
    if name not in SOURCES:
        raise ValueError(f"dataset.name: {did_you_mean('dataset source', str(name), list(SOURCES))}")
    if name == "embedded" and path is not None:
        raise ValueError(
            f"dataset.path: not used with dataset.name=embedded (got {path!r}); "
            "set dataset.name=file to read a local file, or dataset.path=null"
        )
    if name in ("file", "hub") and not path:
        what = "a .jsonl/.json/.csv/.tsv/.parquet/.txt file" if name == "file" else "a Hub dataset id or a local dir"
        raise ValueError(f"dataset.path: required with dataset.name={name}; set dataset.path=<{what}>")
    if name != "hub" and cfg.subset is not None:
        raise ValueError(f"dataset.subset: only used with dataset.name=hub (got {cfg.subset!r}); "
                         "set dataset.subset=null")
    if name != "hub" and cfg.split != "train":
        raise ValueError(f"dataset.split: a {'file' if name == 'file' else 'the embedded set'} has the single split "
                         f"'train' (got {cfg.split!r}); set dataset.split=train")
    if not cfg.prompt_column:
        raise ValueError("dataset.prompt_column: must name a column, got an empty value")
    for key in ("limit", "prefix_tokens"):
        value = getattr(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"dataset.{key}: must be an integer >= 1 or null, got {value!r}")
    if cfg.prefix_tokens is not None and cfg.reference_column is not None:
        raise ValueError(
            "dataset.reference_column: cannot be combined with dataset.prefix_tokens, which makes the rest of "
            "each text the reference; set dataset.reference_column=null or dataset.prefix_tokens=null"
        )
    truncate, empty = getattr(cfg, "truncate", None), getattr(cfg, "empty_prompts", "error")
    if truncate not in (None, "left"):
        raise ValueError(f"dataset.truncate: must be left or null (refuse prompts too long for the model), "
                         f"got {truncate!r}")
    if empty not in ("error", "skip"):
        raise ValueError(f"dataset.empty_prompts: must be error or skip, got {empty!r}")
    if cfg.system_prompt is not None and not cfg.chat_template:
        raise ValueError("dataset.system_prompt: only used inside a chat template; set dataset.chat_template=true")


def load_table(cfg: Any) -> "datasets.Dataset":
    """Rows of the configured source as a `datasets.Dataset`, first `limit` rows only, columns checked.

    name=embedded reads decodebench/data/prompts.jsonl (columns id, category, prompt). name=file reads one
    local file, chosen by suffix (see FILE_BUILDERS). name=hub calls `load_dataset(path, subset, split=...)`:
    a Hub id, or a local directory of data files; a directory written by `save_to_disk` is read with
    `load_from_disk` instead. Raises a one-line ValueError naming the dataset.<key> for every config mistake.
    """
    check_config(cfg)
    if cfg.name == "embedded":
        table, source = _load_file(EMBEDDED_PATH), "the embedded prompt set"
    elif cfg.name == "file":
        path = Path(cfg.path).expanduser()
        table, source = _load_file(path), path.name
    else:
        table, source = _load_hub(cfg), repr(cfg.path)
    check_columns(table, cfg, source)
    if len(table) == 0:
        raise ValueError(f"dataset.path: {source} has no rows")
    if cfg.limit is not None and cfg.limit < len(table):
        table = table.select(range(cfg.limit))
    return table


def to_prompts(table: "datasets.Dataset", cfg: Any, tokenizer: Any = None) -> List[Prompt]:
    """Rows -> Prompts, in table order.

    ids come from `id_column` as strings (must be unique), or are generated as "0000", "0001", ... .
    With `prefix_tokens=N`, each text is tokenized without special tokens; its first N tokens, decoded,
    become the prompt and the remaining tokens, decoded, the reference (prompt + reference rebuilds the text
    for lossless tokenizers such as byte-level BPE). Rows shorter than N+1 tokens are DROPPED (a warning
    says how many), as in the open-ended WebText benchmark with 40-token prefixes. With `chat_template`, the
    (possibly truncated) prompt is wrapped as a user message, after `system_prompt` if set, with
    add_generation_prompt=True; the reference stays plain text. Both steps need `tokenizer`.
    """
    check_config(cfg)
    check_columns(table, cfg, "the table")
    for key, needed in (("prefix_tokens", cfg.prefix_tokens is not None), ("chat_template", cfg.chat_template)):
        if needed and tokenizer is None:
            raise ValueError(f"dataset.{key}: needs a tokenizer, but to_prompts/load_prompts got tokenizer=None")
    if cfg.chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError("dataset.chat_template: the tokenizer has no chat template; set dataset.chat_template=false")

    columns = table.column_names
    texts = table[cfg.prompt_column]
    ids = _ids(table, cfg)
    categories = table[cfg.category_column] if cfg.category_column in columns else [None] * len(texts)
    references = table[cfg.reference_column] if cfg.reference_column is not None else [None] * len(texts)
    neg_col = getattr(cfg, "negative_prompt_column", None)
    negatives = dict(zip(ids, table[neg_col])) if neg_col is not None else {}
    for key, col, values in (("prompt_column", cfg.prompt_column, texts), ("negative_prompt_column", neg_col,
                                                                            negatives.values())):
        for i, text in enumerate(values):
            if not isinstance(text, str):
                raise ValueError(f"dataset.{key}: row {i} (id {ids[i]!r}) has no text in {col!r}")

    rows = list(zip(ids, texts, categories, references))
    if cfg.prefix_tokens is None:  # with prefix_tokens, empty rows are short rows: dropped and counted there
        empty = set(empty_rows(table, cfg))
        if empty:
            rows = [r for i, r in enumerate(rows) if i not in empty]
            log.warning("dataset.empty_prompts=skip: left out %d empty prompt%s of %d", len(empty),
                        "s" * (len(empty) > 1), len(texts))
    if cfg.prefix_tokens is not None:
        rows = _split_prefixes(rows, cfg.prefix_tokens, tokenizer)
    prompts = []
    for id_, text, category, reference in rows:
        neg = negatives.get(id_)
        if cfg.chat_template:
            text = _apply_chat_template(tokenizer, text, cfg.system_prompt)
            neg = None if neg is None else _apply_chat_template(tokenizer, neg, cfg.system_prompt)
        prompts.append(Prompt(id=id_, text=text, category=None if category is None else str(category),
                              reference=None if reference is None else str(reference), negative=neg))
    return prompts


def empty_rows(table: "datasets.Dataset", cfg: Any) -> List[int]:
    """Rows whose prompt is the empty string: a ValueError naming the first, unless empty_prompts=skip."""
    rows = [i for i, t in enumerate(table[cfg.prompt_column]) if isinstance(t, str) and not t.strip()]
    if rows and getattr(cfg, "empty_prompts", "error") != "skip":
        raise ValueError(f"dataset.empty_prompts: row {rows[0]} of {len(table)} has an empty (or only whitespace) prompt ({len(rows)} "
                         "such rows); fill or remove them, or set dataset.empty_prompts=skip to leave them out")
    return rows


def load_prompts(cfg: Any, tokenizer: Any = None) -> List[Prompt]:
    """`to_prompts(load_table(cfg), cfg, tokenizer)`."""
    return to_prompts(load_table(cfg), cfg, tokenizer)


def check_columns(table: "datasets.Dataset", cfg: Any, source: str) -> None:
    """The configured columns exist (optional ones only when set away from their defaults); text is text."""
    columns = table.column_names

    def need(key: str, column: str) -> None:
        if column not in columns:
            raise ValueError(
                f"dataset.{key}: column {column!r} not found in {source}; available: {', '.join(columns)}; "
                f"set dataset.{key}=<one of those>"
            )

    need("prompt_column", cfg.prompt_column)
    if cfg.reference_column is not None:
        need("reference_column", cfg.reference_column)
    if cfg.id_column is not None and cfg.id_column != DEFAULT_ID_COLUMN:
        need("id_column", cfg.id_column)
    if cfg.category_column is not None and cfg.category_column != DEFAULT_CATEGORY_COLUMN:
        need("category_column", cfg.category_column)
    if getattr(cfg, "negative_prompt_column", None) is not None:
        need("negative_prompt_column", cfg.negative_prompt_column)
    for key in ("prompt_column", "reference_column", "negative_prompt_column"):
        column = getattr(cfg, key, None)
        feature = table.features.get(column) if column is not None else None
        if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string", "null"):
            raise ValueError(
                f"dataset.{key}: column {column!r} in {source} holds {_describe(feature)}, not text; "
                f"set dataset.{key}=<a text column>"
            )


# ---------------------------------------------------------------------------------------------- loading


def _load_file(path: Path) -> "datasets.Dataset":
    import datasets

    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise ValueError(
            f"dataset.path: unsupported file type {suffix or '(no suffix)'!r} for {path.name}; "
            f"supported: {', '.join(sorted(FILE_BUILDERS))}"
        )
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the working directory {os.getcwd()})"
        raise ValueError(f"dataset.path: file not found: {path}{where}")
    if path.stat().st_size == 0:
        raise ValueError(f"dataset.path: file is empty: {path}")
    builder = FILE_BUILDERS[suffix]
    kwargs: dict = {}
    scan_data_file(path, builder, sep="\t" if suffix == ".tsv" else ",")  # UTF-8, depth, header: name the line
    check_datasets_cache()
    try:
        if builder == "csv":
            kwargs = _csv_kwargs(path, sep="\t" if suffix == ".tsv" else ",")
        with _quiet_progress():
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # parse errors come in many types; the cause stays chained
        cause = e
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UnicodeDecodeError):
            raise ValueError(f"dataset.path: {path.name} is not UTF-8 text (byte {cause.object[cause.start]:#04x} at "
                             f"offset {cause.start}); convert the file to UTF-8, e.g. with iconv -t UTF-8") from e
        raise ValueError(f"dataset.path: could not read {path.name} as {builder}: {_one_line(e)}") from e


def _csv_kwargs(path: Path, sep: str) -> dict:
    """Read every CSV cell as the string it is: ids "007" stay "007", a prompt "NA" stays "NA"."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    return {"sep": sep, "converters": {c: str for c in header}, "keep_default_na": False}


def _load_hub(cfg: Any) -> "datasets.Dataset":
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    local = Path(cfg.path).expanduser()
    if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
        return _load_saved(local, cfg)
    try:
        return datasets.load_dataset(cfg.path, cfg.subset, split=cfg.split)
    except (DatasetNotFoundError, FileNotFoundError, ConnectionError) as e:
        raise ValueError(f"dataset.path: could not load {cfg.path!r}: {_one_line(e)}") from e
    except ValueError as e:  # "Unknown split ...", "BuilderConfig ... not found", "Config name is missing ..."
        message = _one_line(e)
        key = "split" if "split" in message.lower() else "subset" if "config" in message.lower() else "path"
        raise ValueError(f"dataset.{key}: {message} (loading {cfg.path!r}); set dataset.{key}=<a valid value>") from e


def _load_saved(local: Path, cfg: Any) -> "datasets.Dataset":
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (not load_dataset-able)."""
    import datasets

    if cfg.subset is not None:
        raise ValueError(
            f"dataset.subset: {local} was written by save_to_disk and has no subsets; set dataset.subset=null"
        )
    data = datasets.load_from_disk(str(local))
    if isinstance(data, datasets.DatasetDict):
        if cfg.split not in data:
            raise ValueError(
                f"dataset.split: split {cfg.split!r} not found in {local}; available: {', '.join(data)}; "
                "set dataset.split=<one of those>"
            )
        data = data[cfg.split]
    return data


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Mute "Generating train split" bars and parse-error log lines for a small local file; restore after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    # `datasets` logs a parse error before raising it; the error we raise says it in one line instead.
    ds_log = logging.getLogger("datasets")
    level = ds_log.level
    ds_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ds_log.setLevel(level)
        if not was_disabled:
            datasets.enable_progress_bars()


# ---------------------------------------------------------------------------------------------- rows


def _ids(table: "datasets.Dataset", cfg: Any) -> List[str]:
    if cfg.id_column is None or cfg.id_column not in table.column_names:
        width = max(4, len(str(len(table) - 1)))
        return [f"{i:0{width}d}" for i in range(len(table))]
    ids, first_row = [], {}
    for i, value in enumerate(table[cfg.id_column]):
        if value is None or value == "":
            raise ValueError(f"dataset.id_column: row {i} has no id in column {cfg.id_column!r}; ids must be set")
        id_ = str(value)
        if id_ in first_row:
            raise ValueError(
                f"dataset.id_column: duplicate id {id_!r} in column {cfg.id_column!r} (rows {first_row[id_]} "
                f"and {i}); ids must be unique, or set dataset.id_column=null to number the rows"
            )
        first_row[id_] = i
        ids.append(id_)
    return ids


def _split_prefixes(rows: list, n: int, tokenizer: Any) -> list:
    """(id, text, category, _) -> (id, first n tokens, category, the rest); rows under n+1 tokens dropped."""
    token_ids = tokenizer([text for _, text, _, _ in rows], add_special_tokens=False)["input_ids"]
    kept = []
    for (id_, _, category, _), ids in zip(rows, token_ids):
        if len(ids) < n + 1:
            continue
        prefix, rest = (
            tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for part in (ids[:n], ids[n:])
        )
        kept.append((id_, prefix, category, rest))
    if not kept:
        raise ValueError(
            f"dataset.prefix_tokens: all {len(rows)} rows are shorter than prefix_tokens+1 = {n + 1} tokens; "
            "set a smaller dataset.prefix_tokens"
        )
    if len(kept) < len(rows):
        log.warning("dataset.prefix_tokens=%d: dropped %d of %d rows shorter than %d tokens",
                    n, len(rows) - len(kept), len(rows), n + 1)
    return kept


def _apply_chat_template(tokenizer: Any, text: str, system_prompt: Optional[str]) -> str:
    from jinja2.exceptions import TemplateError

    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": text})
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError as e:  # e.g. templates that reject a system message
        key = "system_prompt" if system_prompt is not None else "chat_template"
        raise ValueError(f"dataset.{key}: the tokenizer's chat template failed: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _describe(feature: Any) -> str:
    return str(getattr(feature, "dtype", None) or type(feature).__name__)
