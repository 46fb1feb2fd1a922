"""Loads decodebench_arith's local data file (lm-eval's `custom_dataset` hook): no Hub, no network."""

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "arith.jsonl"


def load(**kwargs):
    import datasets

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({split: datasets.Dataset.from_list([r for r in rows if r["split"] == split])
                                 for split in ("train", "test")})
