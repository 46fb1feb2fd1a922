"""Write decodebench's offline lm-eval task data: arithmetic word problems with exact integer answers.

    python scripts/make_arith_task.py            # rewrites decodebench/tasks/lm_eval_tasks/decodebench_arith/arith.jsonl

Seeded, so the file is reproducible byte for byte: 200 test problems and 8 few-shot examples (train split).
One step with single-digit operands, and a worked solution ("4 + 3 = 7") that the few-shot examples show
and the answer is read from, so that a 135M-parameter model answers a fair share.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "decodebench/tasks/lm_eval_tasks/decodebench_arith/arith.jsonl"
NAMES = ["Tom", "Anna", "Li", "Sara", "Omar", "Maya", "Ben", "Zoe", "Ivan", "Lena", "Raj", "Emma"]
THINGS = ["apples", "pencils", "marbles", "books", "stickers", "cookies", "coins", "cards", "shells", "balloons"]


def problem(rng: random.Random) -> tuple[str, int, str, str]:
    """(question, answer, kind, worked solution) for one seeded draw: single-digit operands, one step."""
    who, what = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    kind = rng.choice(["add", "sub", "plus", "minus"])
    if kind == "add":
        return (f"{who} has {a} {what} and gets {b} more {what}. How many {what} does {who} have now?", a + b,
                kind, f"{a} + {b} = {a + b}")
    if kind == "sub":
        return (f"{who} has {a + b} {what} and gives away {b} of them. How many {what} does {who} have now?",
                a, kind, f"{a + b} - {b} = {a}")
    if kind == "plus":
        return f"What is {a} plus {b}?", a + b, kind, f"{a} + {b} = {a + b}"
    return f"What is {a + b} minus {b}?", a, kind, f"{a + b} - {b} = {a}"


def make(seed: int = 15, n_test: int = 200, n_train: int = 8) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_test + n_train:
        q, a, kind, solution = problem(rng)
        if q in seen:
            continue
        seen.add(q)
        split = "train" if len(rows) < n_train else "test"
        rows.append({"id": f"{split}-{len(rows)}", "split": split, "question": q, "answer": str(a), "kind": kind,
                     "solution": solution})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = make(args.seed)
    args.out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {args.out}")


if __name__ == "__main__":
    main()
