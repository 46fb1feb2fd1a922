"""Time decodebench's beam search and transformers' `generate(num_beams=...)` on the same workload, in one run.

    .venv/bin/python scripts/bench_beam.py [--prompts 16] [--batch-size 8] [--max-new-tokens 32]
        [--num-beams 4] [--device auto] [--dtype auto] [--repeats 1]

Both run `batch-size` prompts at a time (x num_beams rows per forward), on prompts ordered by length so
both form the same batches. Prints wall time, returned tokens/s, forward passes and tokens fed through
the model (counted by a forward hook for generate), and how many outputs agree token for token; the last
line is JSON. Why ours feeds fewer tokens: one prefill per prompt, its cache repeated to the beams
(generate prefills every beam).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from decodebench import data, models
from decodebench.decoding.engine import Request, eos_ids, generate
from decodebench.decoding.search.spec import build_strategy


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ForwardCounter:
    """Counts forward calls and input tokens of `model` (a hook: the forward's signature stays intact)."""

    def __init__(self, model):
        self.calls = self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.tokens += int(ids.numel()) if ids is not None else 0

    def close(self):
        self.handle.remove()


def run_generate(model, tok, texts, a, device):
    eos = set(eos_ids(model, tok))
    outs = []
    for s in range(0, len(texts), a.batch_size):
        batch = tok(texts[s: s + a.batch_size], return_tensors="pt", padding=True).to(device)
        res = model.generate(**batch, max_new_tokens=a.max_new_tokens, num_beams=a.num_beams, do_sample=False,
                             length_penalty=1.0, early_stopping=False, pad_token_id=tok.pad_token_id,
                             return_dict_in_generate=True)
        lens = (res.beam_indices >= 0).sum(1).tolist()
        gen = res.sequences[:, batch["input_ids"].shape[1]:].tolist()
        outs += [row[:n] for row, n in zip(gen, lens)]
    assert all(not (set(o[:-1]) & eos) for o in outs)
    return outs


def run_ours(model, tok, texts, a):
    spec = build_strategy({"name": "beam", "method": "beam", "num_beams": a.num_beams, "length_penalty": 1.0,
                           "early_stopping": False, "max_new_tokens": a.max_new_tokens})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(t)["input_ids"], params=spec.params) for i, t in enumerate(texts)]
    outs, stats = generate(model, tok, reqs, spec, batch_size=a.batch_size)
    return [o.token_ids for o in outs], stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch (x num_beams rows)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--num-beams", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    device = models.pick_device(a.device)
    dtype = models.pick_dtype(a.dtype, device)
    model, tok = models.load_model(models.ModelConfig(), device=device, dtype=dtype)
    texts = [p.text for p in data.load_prompts(data.DatasetConfig(limit=a.prompts))]
    texts.sort(key=lambda t: len(tok(t)["input_ids"]))  # the engine's batching order, so batches coincide
    machine = (torch.cuda.get_device_name() if device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"beam search, decodebench vs transformers generate: {len(texts)} prompts, {a.batch_size} per batch, "
          f"{a.num_beams} beams, {a.max_new_tokens} new tokens, {device} {dtype} ({machine}), "
          f"torch {torch.__version__}")
    warm = argparse.Namespace(**{**vars(a), "max_new_tokens": 2})
    run_ours(model, tok, texts[:2], warm)
    run_generate(model, tok, texts[:2], warm, device)

    best: dict = {}
    for _ in range(a.repeats):
        sync(device)
        t = time.perf_counter()
        ours, stats = run_ours(model, tok, texts, a)
        sync(device)
        t_ours = time.perf_counter() - t
        counter = ForwardCounter(model)
        t = time.perf_counter()
        ref = run_generate(model, tok, texts, a, device)
        sync(device)
        t_hf = time.perf_counter() - t
        counter.close()
        if not best or t_ours < best["decodebench_s"]:
            best.update(decodebench_s=t_ours, ours_forwards=stats.forward_passes, ours_tokens=stats.tokens_processed)
        if "generate_s" not in best or t_hf < best["generate_s"]:
            best.update(generate_s=t_hf, hf_forwards=counter.calls, hf_tokens=counter.tokens)
    n_ours, n_ref = sum(len(o) for o in ours), sum(len(o) for o in ref)
    row = {
        "decodebench_s": best["decodebench_s"], "generate_s": best["generate_s"],
        "decodebench_tok_s": n_ours / best["decodebench_s"], "generate_tok_s": n_ref / best["generate_s"],
        "speedup": best["generate_s"] / best["decodebench_s"],
        "forward_passes": {"decodebench": best["ours_forwards"], "generate": best["hf_forwards"]},
        "tokens_processed": {"decodebench": best["ours_tokens"], "generate": best["hf_tokens"]},
        "outputs_equal": sum(x == y for x, y in zip(ours, ref)), "outputs": len(ref),
    }
    print(f"  decodebench {row['decodebench_s']:7.1f} s ({row['decodebench_tok_s']:6.1f} tok/s)   "
          f"generate {row['generate_s']:7.1f} s ({row['generate_tok_s']:6.1f} tok/s)   speedup {row['speedup']:.2f}x")
    print(f"  forwards {row['forward_passes']}   tokens through the model {row['tokens_processed']}   "
          f"identical outputs {row['outputs_equal']}/{row['outputs']}")
    print(json.dumps({"device": device, "dtype": dtype, "machine": machine, "prompts": len(texts),
                      "batch_size": a.batch_size, "num_beams": a.num_beams, "max_new_tokens": a.max_new_tokens, **row}))


if __name__ == "__main__":
    main()
