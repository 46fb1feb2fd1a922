"""Time decodebench's engine and transformers' generate on the same workload, in one run.

    .venv/bin/python scripts/bench_engine.py [--prompts 32] [--batch-size 8] [--max-new-tokens 64]
        [--device auto] [--dtype auto] [--strategies greedy,topp] [--repeats 1]

Prints generated tokens/s for both and the ratio (ours / generate), per strategy; the last line is JSON.
Both count generated tokens without padding, up to and including EOS.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from decodebench import data, models
from decodebench.decoding.engine import Request, eos_ids, generate
from decodebench.decoding.strategies import build_strategy

STRATS = {
    "greedy": {"name": "greedy", "do_sample": False},
    "topp": {"name": "topp", "do_sample": True, "top_p": 0.95},
    "topk_topp_temp": {"name": "topk_topp", "do_sample": True, "top_k": 50, "top_p": 0.95, "temperature": 0.8},
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hf_tokens(model, tok, texts, spec, batch_size, device) -> int:
    eos = set(eos_ids(model, tok))
    n = 0
    p = spec.params
    kw = dict(do_sample=p.do_sample, max_new_tokens=spec.max_new_tokens, pad_token_id=tok.pad_token_id,
              top_k=p.top_k if p.top_k is not None else 0, top_p=p.top_p, temperature=p.temperature)
    kw = {k: v for k, v in kw.items() if v is not None and (p.do_sample or k not in ("top_k", "top_p", "temperature"))}
    for s in range(0, len(texts), batch_size):
        batch = tok(texts[s: s + batch_size], return_tensors="pt", padding=True).to(device)
        out = model.generate(**batch, **kw)
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            n += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
    return n


def ours_tokens(model, tok, texts, spec, batch_size) -> int:
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(t)["input_ids"], params=spec.params) for i, t in enumerate(texts)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=batch_size)
    return sum(len(o.token_ids) for o in outs)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    n = fn()
    sync(device)
    return n, time.perf_counter() - t


def forward_vs_sampling(model, tok, texts, batch: int, device: str, repeats: int = 10) -> dict:
    """One decode step of the model (batch rows, KV cache of the prompts) against the whole sampling step
    (temperature 0.7 + top-k 50 + top-p 0.9 chain and the exponential race) on the same batch size."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sampling import time_sampling_step

    from decodebench.decoding.engine import ModelRunner, pack_left

    prompts = [tok(texts[i % len(texts)])["input_ids"] for i in range(batch)]
    ids, mask = pack_left(prompts, tok.pad_token_id, device)
    runner = ModelRunner(model)
    times = []
    for _ in range(repeats):
        logits, cache, _ = runner.prefill(ids, mask)
        tokens = logits.argmax(-1)
        m = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        sync(device)
        t = time.perf_counter()
        runner.step(tokens, m, cache)
        sync(device)
        times.append(time.perf_counter() - t)
    fwd = sorted(times)[len(times) // 2]
    vocab = model.get_output_embeddings().weight.shape[0]
    samp = time_sampling_step(batch, vocab, device, repeats=repeats)
    return {"batch": batch, "forward_ms": 1000 * fwd, "sampling_ms": 1000 * samp, "sampling_over_forward": samp / fwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--strategies", default="greedy,topp")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--step-batch", type=int, default=64, help="batch for the forward-vs-sampling step timing")
    a = ap.parse_args()
    device = models.pick_device(a.device)
    dtype = models.pick_dtype(a.dtype, device)
    model, tok = models.load_model(models.ModelConfig(), device=device, dtype=dtype)
    texts = [p.text for p in data.load_prompts(data.DatasetConfig(limit=a.prompts))]
    machine = (torch.cuda.get_device_name() if device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"decodebench engine vs transformers generate: {len(texts)} prompts, batch {a.batch_size}, "
          f"{a.max_new_tokens} new tokens, {device} {dtype} ({machine}), torch {torch.__version__}")
    # warm-up (allocator, kernels) on a small slice
    warm = build_strategy({**STRATS["greedy"], "max_new_tokens": 4})
    ours_tokens(model, tok, texts[:2], warm, 2)
    hf_tokens(model, tok, texts[:2], warm, 2, device)
    rows = []
    for name in a.strategies.split(","):
        spec = build_strategy({**STRATS[name], "max_new_tokens": a.max_new_tokens})
        best = {}
        for _ in range(a.repeats):
            for who, fn in (("decodebench", lambda: ours_tokens(model, tok, texts, spec, a.batch_size)),
                            ("generate", lambda: hf_tokens(model, tok, texts, spec, a.batch_size, device))):
                n, s = timed(fn, device)
                if who not in best or n / s > best[who]:
                    best[who] = n / s
        ratio = best["decodebench"] / best["generate"]
        rows.append({"strategy": name, "decodebench_tok_s": best["decodebench"], "generate_tok_s": best["generate"],
                     "ratio": ratio})
        print(f"  {name:16s} decodebench {best['decodebench']:8.1f} tok/s   generate {best['generate']:8.1f} tok/s"
              f"   ratio {ratio:.2f}x")
    step = forward_vs_sampling(model, tok, texts, a.step_batch, device)
    print(f"  step at batch {step['batch']}: model forward {step['forward_ms']:.1f} ms, sampling step "
          f"(temperature+top-k+top-p+sample) {step['sampling_ms']:.1f} ms = {step['sampling_over_forward']:.2f}x forward")
    print(json.dumps({"device": device, "dtype": dtype, "machine": machine, "rows": rows, "step": step}))


if __name__ == "__main__":
    main()
