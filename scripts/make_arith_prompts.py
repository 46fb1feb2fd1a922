"""Writes decodebench/data/arith_prompts.jsonl: decodebench_arith's test problems as plain prompts, in the
task's own 4-shot format (lm-eval's doc_to_text, target delimiter " ", few-shot delimiter "\\n\\n", the first
four training problems as the shots), with the solution as the reference. The `reasoning` and
`temperature_robustness` studies score them with the `answer_match` scorer (the task's flexible-extract).

    python scripts/make_arith_prompts.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "decodebench/tasks/lm_eval_tasks/decodebench_arith/arith.jsonl"
OUT = ROOT / "decodebench/data/arith_prompts.jsonl"


def main() -> None:
    rows = [json.loads(line) for line in SRC.read_text(encoding="utf-8").splitlines()]
    shots = [r for r in rows if r["split"] == "train"][:4]
    head = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['solution']}" for r in shots)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            if r["split"] != "test":
                continue
            prompt = f"{head}\n\nQuestion: {r['question']}\nAnswer:"
            f.write(json.dumps({"id": r["id"], "category": r["kind"], "prompt": prompt,
                                "reference": r["solution"]}) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
