"""Scorer speed. The last line is JSON.

Text scorers: seconds per scorer on released generations (default: the 3,000 nucleus generations, three
runs, in ../shared). Each scorer is timed alone, whitespace tokenization included; bootstrap intervals
included for the per-item scorers (--bootstrap 0 to leave them out).

    python scripts/bench_scorers.py [--file PATH] [--names rep self_bleu ...] [--bootstrap 1000]

Perplexity against a bare batched forward of the same model, side by side: both sides see the same token
ids (a 1-token prompt + a 300-token continuation per text, seeded random ids) in batches of the same size
in the model's dtype; the bare side only runs `model(input_ids)`. Prints tokens/s of each and the ratio
scorer / bare (the goal: >= 0.7).

    python scripts/bench_scorers.py perplexity [--model embedded] [--texts 1000] [--tokens 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decodebench.scorers import SCORERS, load_generations, resolve_scorers

DEFAULT_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "webtext-gpt2-large" / "nucleus.json"


def perplexity_main(argv: list[str]) -> None:
    """Perplexity scoring vs a bare batched forward of the same model (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="bench_scorers.py perplexity")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    from decodebench import models
    from decodebench.scorers import resolve_scorers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = models.pick_device(args.device)
    dtype = models.pick_dtype(args.dtype, device)
    model, tok = models.load_model(models.ModelConfig(name_or_path=args.model), device=device, dtype=dtype)
    vocab = model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab, len(tok)), (args.texts, args.tokens), generator=g)
    bos = tok.bos_token_id if tok.bos_token_id is not None else 0
    records = [{"prompt_id": str(i), "sample_index": 0, "prompt": "", "text": "", "prompt_token_ids": [bos],
                "token_ids": row} for i, row in enumerate(ids.tolist())]
    n_tokens = args.texts * args.tokens

    full = torch.cat([torch.full((args.texts, 1), bos), ids], dim=1)

    @torch.no_grad()
    def bare() -> float:
        t0 = time.perf_counter()
        for k in range(0, args.texts, args.batch_size):
            model(input_ids=full[k:k + args.batch_size].to(device), use_cache=False).logits
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    plan = resolve_scorers({"names": ["perplexity"], "bootstrap": {"samples": 0},
                            "perplexity": {"batch_size": args.batch_size}})

    def scorer() -> float:
        t0 = time.perf_counter()
        plan.score(records, model=model, tokenizer=tok, device=device, progress=False)
        return time.perf_counter() - t0

    with torch.no_grad():  # warm-up: first-call allocations and kernels, on both sides
        model(input_ids=full[:args.batch_size].to(device))
    t_bare, t_scorer = bare(), scorer()
    row = {"model": args.model, "device": device, "dtype": dtype, "texts": args.texts, "tokens": args.tokens,
           "batch_size": args.batch_size, "threads": torch.get_num_threads(),
           "bare_tokens_per_s": n_tokens / t_bare, "scorer_tokens_per_s": n_tokens / t_scorer,
           "ratio": t_bare / t_scorer, "load_1min": os.getloadavg()[0]}
    print(f"{'side':<10}{'tokens/s':>12}{'seconds':>10}")
    print(f"{'bare':<10}{row['bare_tokens_per_s']:>12.0f}{t_bare:>10.1f}")
    print(f"{'scorer':<10}{row['scorer_tokens_per_s']:>12.0f}{t_scorer:>10.1f}")
    print(f"ratio scorer/bare: {row['ratio']:.2f} (goal >= 0.7); machine load {row['load_1min']:.1f}")
    print(json.dumps(row), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["perplexity"]:
        return perplexity_main(sys.argv[2:])
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
