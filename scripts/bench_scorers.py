"""Seconds per scorer on released generations (default: the 3,000 nucleus generations, three runs, in
../shared). Each scorer is timed alone, whitespace tokenization included; bootstrap intervals included
for the per-item scorers (--bootstrap 0 to leave them out). The last line is JSON.

    python scripts/bench_scorers.py [--file PATH] [--names rep self_bleu ...] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from decodebench.scorers import SCORERS, load_generations, resolve_scorers

DEFAULT_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "webtext-gpt2-large" / "nucleus.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--names", nargs="*", help="scorers to time (default: every text-only scorer)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    args = parser.parse_args()
    records = load_generations(args.file)
    names = args.names or [n for n, s in SCORERS.items() if s.needs <= {"texts"}]
    runs = len({r["sample_index"] for r in records})
    print(f"{len(records)} generations, {runs} run(s), from {args.file.resolve()}")
    seconds = {}
    for name in names:
        plan = resolve_scorers({"names": [name], "bootstrap": {"samples": args.bootstrap}})
        start = time.perf_counter()
        plan.score(records, progress=False)
        seconds[name] = round(time.perf_counter() - start, 3)
        print(f"{name:20s} {seconds[name]:8.2f} s")
    print(f"{'total':20s} {sum(seconds.values()):8.2f} s")
    print(json.dumps({"generations": len(records), "runs": runs, "seconds": seconds}))


if __name__ == "__main__":
    main()
