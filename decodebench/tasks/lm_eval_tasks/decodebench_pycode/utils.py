"""decodebench_pycode: local data, the program to run, and its pass@1 through decodebench's sandbox."""

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "pycode.jsonl"


def load(**kwargs):
    import datasets

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def build_program(resps, docs):
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def process_results(doc, results):
    from decodebench.tasks.sandbox import run_program

    return {"pass@1": float(run_program(results[0] + "\n" + doc["test"] + "\n", timeout_s=10.0))}
