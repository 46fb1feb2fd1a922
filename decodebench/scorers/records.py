"""Generation records from disk: a run's `generations.jsonl`, a plain JSON list, or the released
prefix/reference/generated_result files (one generation per run under "0", "1", ...).

A record is a `decodebench.results.GenerationRecord` (None where the source has no such field).
"""

from __future__ import annotations

import json
from pathlib import Path
from decodebench.results import GenerationRecord

# Field names of the released files (Su & Collier), used when the default names are absent.
RELEASED = {"text": "generated_result", "prompt": "prefix_text", "reference": "reference_text"}


def _read_items(path: Path) -> list:
    if not path.is_file():
        raise ValueError(f"generations file {path} does not exist")
    from decodebench import untrusted

    raw = untrusted.read_text(path)  # not UTF-8: a ValueError naming the file and line
    deep = untrusted.too_deep(raw)  # before any parser: deep nesting could end the process
    if deep is not None:
        raise ValueError(f"{path}:{untrusted.line_of(raw, deep)}: JSON nested more than {untrusted.MAX_DEPTH} levels "
                         f"deep; expected JSON lines or a JSON list of records")
    if not raw.strip():
        raise ValueError(f"generations file {path} is empty")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = None
        items = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno} is not JSON ({exc.msg}); expected JSON lines or a JSON list") from None
    else:
        if isinstance(data, dict):
            items = [data]
        elif isinstance(data, list):
            items = data
        else:
            raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected a list of records or JSON lines")
    if not items:
        raise ValueError(f"generations file {path} holds no records")
    bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
    if bad is not None:
        raise ValueError(f"record {bad} in {path} is a JSON {type(items[bad]).__name__}, not an object")
    return items


def _field(items: list[dict], name: str, default: str) -> str:
    """The user's field name; the released files' name when the default is asked for and absent."""
    if name == default and default in RELEASED and not any(default in it for it in items):
        alternative = RELEASED[default]
        if any(alternative in it for it in items):
            return alternative
    return name


def load_generations(path: str | Path, *, text_field: str = "text", prompt_field: str = "prompt",
                     reference_field: str = "reference", id_field: str = "prompt_id",
                     sample_field: str = "sample_index") -> list[GenerationRecord]:
    """Records from a JSONL/JSON file. A text field holding an object of runs ({"0": str, "1": str})
    gives one record per run with `sample_index` = int(key). A missing id field numbers the prompts by
    position; a missing sample field means sample 0; missing prompt/reference fields give None."""
    path = Path(path)
    items = _read_items(path)
    text_key = _field(items, text_field, "text")
    prompt_key = _field(items, prompt_field, "prompt")
    ref_key = _field(items, reference_field, "reference")
    has_ids = [id_field in it for it in items]
    if any(has_ids) and not all(has_ids):
        missing = has_ids.index(False)
        raise ValueError(f"record {missing} in {path} has no {id_field!r} field while others do")
    records = []
    for i, item in enumerate(items):
        if text_key not in item:
            raise ValueError(f"record {i} in {path} has no text field {text_field!r} "
                             f"(fields: {', '.join(sorted(item)) or 'none'}); pass text_field=")
        value = item[text_key]
        runs = value.items() if isinstance(value, dict) else [(item.get(sample_field, 0), value)]
        for sample, text in runs:
            if not isinstance(text, str):
                raise ValueError(f"record {i} in {path}: field {text_key!r} is a {type(text).__name__}, not a string")
            try:
                sample = int(sample)
            except (TypeError, ValueError):
                raise ValueError(f"record {i} in {path}: sample index {sample!r} is not an integer") from None
            records.append(GenerationRecord(
                prompt_id=item[id_field] if has_ids[i] else i, prompt=item.get(prompt_key),
                prompt_token_ids=item.get("prompt_token_ids"), sample_index=sample, text=text,
                token_ids=item.get("token_ids"), num_tokens=item.get("num_tokens"),
                finish_reason=item.get("finish_reason"), reference=item.get(ref_key)))
    return records
