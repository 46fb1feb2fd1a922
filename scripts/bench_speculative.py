"""Time speculative decoding against plain decoding of the same requests, side by side, in one run.

    .venv/bin/python scripts/bench_speculative.py [--prompts 16] [--max-new-tokens 64] [--batch-size 8]
        [--drafts early_exit=8,early_exit=16,prompt_lookup=3] [--k 2,4] [--sample] [--device auto] [--dtype auto]

The embedded chat prompts through the embedded model (or --model). Plain decoding is the engine's greedy
(or, with --sample, temperature-1 sampling) on the same prompt ids and batch size. For each draft source and
drafts-per-round k: tokens/s, the speedup over plain decoding, acceptance_rate (accepted / proposed drafts),
mean_accepted_tokens (accepted drafts per row and round) and target forward passes per token. Greedy runs
also check that the speculative output equals the plain one token for token. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from decodebench import data, models
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.speculative import speculative_metrics
from decodebench.decoding.search.spec import build_strategy


def timed(model, tok, prompts, d, batch_size, device):
    spec = build_strategy(d)
    reqs = [Request(prompt_id=str(i), prompt_ids=p, params=spec.params, seed=0) for i, p in enumerate(prompts)]
    generate(model, tok, reqs[:1], spec, batch_size=1)  # warm-up: first-call allocations
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    outs, stats = generate(model, tok, reqs, spec, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return outs, stats, time.perf_counter() - t


def parse_draft(s: str) -> dict:
    key, _, val = s.partition("=")
    return {key: val if key == "model" else int(val)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--drafts", default="early_exit=8,early_exit=16,prompt_lookup=3")
    ap.add_argument("--k", default="2,4")
    ap.add_argument("--sample", action="store_true", help="temperature-1 sampling instead of greedy")
    ap.add_argument("--model", default=None, help="target model (default: the embedded one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args()
    device = models.pick_device(a.device)
    dtype = models.pick_dtype(a.dtype, device)
    mcfg = models.ModelConfig() if a.model is None else models.ModelConfig(name_or_path=a.model)
    model, tok = models.load_model(mcfg, device=device, dtype=dtype)
    prompts = [tok.apply_chat_template([{"role": "user", "content": p.text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"]
               for p in data.load_prompts(data.DatasetConfig(limit=a.prompts))]
    base = {"max_new_tokens": a.max_new_tokens, "do_sample": a.sample}
    plain, pstats, pt = timed(model, tok, prompts, {"name": "plain", **base}, a.batch_size, device)
    plain_tps = pstats.generated_tokens / pt
    print(f"speculative decoding benchmark: {len(prompts)} chat prompts, up to {a.max_new_tokens} new tokens, "
          f"batch {a.batch_size}, {'sampling' if a.sample else 'greedy'}, {device} {dtype}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'draft':<22}{'k':>3}{'tok/s':>9}{'speedup':>9}{'accept':>8}{'acc/round':>10}{'fwd/tok':>9}  same")
    print(f"{'plain':<22}{'':>3}{plain_tps:>9.1f}{1.0:>9.2f}{'':>8}{'':>10}"
          f"{pstats.forward_passes / pstats.generated_tokens:>9.3f}")
    rows = [{"draft": "plain", "tokens_per_s": plain_tps}]
    for draft in a.drafts.split(","):
        for k in [int(x) for x in a.k.split(",")]:
            d = {"name": "speculative", "method": "speculative", "assistant": parse_draft(draft),
                 "num_assistant_tokens": k, **base}
            outs, st, t = timed(model, tok, prompts, d, a.batch_size, device)
            m = speculative_metrics(st.extra)
            tps = st.generated_tokens / t
            same = all(o.token_ids == p.token_ids for o, p in zip(outs, plain)) if not a.sample else None
            row = {"draft": draft, "k": k, "tokens_per_s": tps, "speedup": tps / plain_tps, **m,
                   "forward_passes_per_token": st.forward_passes / st.generated_tokens, "same_as_plain": same}
            rows.append(row)
            print(f"{draft:<22}{k:>3}{tps:>9.1f}{row['speedup']:>9.2f}{m['acceptance_rate']:>8.2f}"
                  f"{m['mean_accepted_tokens']:>10.2f}{row['forward_passes_per_token']:>9.3f}  {same}")
    print(json.dumps({"device": device, "dtype": dtype, "rows": rows}))


if __name__ == "__main__":
    main()
