"""Time decodebench's engine against transformers (and vLLM when installed) on the same prompt ids, in one run.

    .venv/bin/python scripts/bench_engine.py [--workload natural|fixed|both] [--prompts N] [--batch-sizes 64]
        [--max-new-tokens N] [--strategies greedy,topp] [--engines ours,ours_static,generate,generate_static]
        [--device auto] [--dtype auto]

Engines: `ours` (continuous batching), `ours_static` (static batches), `generate` (transformers, dynamic
cache), `generate_static` (`cache_implementation="static"`, compiled on CUDA), `generate_batch`
(transformers' continuous batching, greedy only: its sampler differs), `vllm` (vLLM in its own environment,
`--vllm-python`, built by scripts/setup_vllm.sh; skipped with a one-line reason when it cannot run). Workloads:
`natural` (the embedded chat prompts, EOS on, rows end when the model says so) and `fixed` (EOS off: every row runs
`max_new_tokens`); `both` runs fixed (64 prompts x 128 tokens) and then natural (128 prompts, up to 256
tokens) in one process, which is how the README's table is measured. Every engine counts generated tokens
without padding, up to and including EOS.

Prints tokens/s, the ratio to `generate`, row-step efficiency (ours), peak memory, and the machine; per
strategy our ms/step against the bare decode forward at the same batch and mean context (the "forward
floor": 1.00x would be a step that costs nothing but the model), the chain it ran, and aten ops per step
outside the forward (eager, batch 8); then the decode forward against a named sampling chain; the last line
is JSON. A smoke check: `--prompts 8 --batch-sizes 4 --max-new-tokens 16 --engines ours,generate`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from decodebench import data, models
from decodebench.decoding.engine import Request, eos_ids, generate
from decodebench.decoding.search.spec import build_strategy

STRATS = {
    "greedy": {"name": "greedy", "do_sample": False},
    "topp": {"name": "topp", "do_sample": True, "top_p": 0.95},
    "minp": {"name": "minp", "do_sample": True, "min_p": 0.05},
    "topk": {"name": "topk", "do_sample": True, "top_k": 50},
}
LAST_STATS: dict = {}  # engine name -> BatchStats of its last run (ms/step, the chain applied)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start a new peak: CUDA's allocator stats, or Linux's peak resident size (clear_refs 5)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the figure is the process's peak so far


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count(rows, eos: set, fixed: bool) -> int:
    return sum(len(r) if fixed else next((i + 1 for i, t in enumerate(r) if t in eos), len(r)) for r in rows)


def hf_kwargs(spec, tok, fixed: bool) -> dict:
    p = spec.params
    kw = dict(do_sample=p.do_sample, max_new_tokens=spec.max_new_tokens, pad_token_id=tok.pad_token_id)
    if p.do_sample:
        kw.update(top_p=p.top_p if p.top_p is not None else 1.0, top_k=0, temperature=1.0)
    if fixed:
        kw["min_new_tokens"] = spec.max_new_tokens  # EOS held back: every row runs max_new_tokens
    return kw


def run_generate(model, tok, prompts, spec, bs, device, fixed, static=False):
    eos = set(eos_ids(model, tok))
    kw = hf_kwargs(spec, tok, fixed)
    if static:
        kw["cache_implementation"] = "static"  # generate compiles its static-cache step on CUDA by itself
    n = 0
    for s in range(0, len(prompts), bs):
        batch = tok.pad({"input_ids": prompts[s: s + bs]}, return_tensors="pt", padding_side="left").to(device)
        out = model.generate(**batch, **kw)
        n += count(out[:, batch["input_ids"].shape[1]:].tolist(), eos, fixed)
    return n, {}


def run_generate_batch(model, tok, prompts, spec, bs, device, fixed):
    from transformers import GenerationConfig

    if spec.params.do_sample:
        return None, {"skip": "generate_batch: its sampler is not transformers' top-p processor chain"}
    gc = GenerationConfig(max_new_tokens=spec.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                          eos_token_id=None if fixed else model.generation_config.eos_token_id,
                          max_batch_tokens=bs * 8)
    out = model.generate_batch(inputs=[list(p) for p in prompts], generation_config=gc, progress_bar=False)
    eos = set(eos_ids(model, tok))
    return count([o.generated_tokens for o in out.values()], eos, fixed), {}


def run_ours(model, tok, prompts, spec, bs, device, fixed, continuous=True):
    if fixed:
        spec = build_strategy({**STRATS[spec.name], "max_new_tokens": spec.max_new_tokens,
                               "min_new_tokens": spec.max_new_tokens})
    reqs = [Request(prompt_id=str(i), prompt_ids=list(p), params=spec.params) for i, p in enumerate(prompts)]
    outs, st = generate(model, tok, reqs, spec, batch_size=bs, continuous=continuous)
    LAST_STATS["ours" if continuous else "ours_static"] = st
    return sum(len(o.token_ids) for o in outs), {"row_step_efficiency": st.generated_tokens / max(st.row_steps, 1),
                                                 "ms_per_step": sum(st.step_ms) / max(len(st.step_ms), 1),
                                                 "chain": "+".join(st.chain) or "argmax"}


def vllm_model_dir(cfg, model, tok):
    """The same weights as an HF directory vLLM reads: the dequantized GGUF cache that load_model wrote
    (embedded or .gguf models), a local model directory as it is, else a fresh save of `model`."""
    import tempfile
    from pathlib import Path

    kind, path = models.resolve_source(cfg)
    if kind in ("embedded", "gguf") and (models._gguf_cache_dir(path) / "model.safetensors").is_file():
        return models._gguf_cache_dir(path)
    if kind == "local":
        return path
    out = Path(tempfile.mkdtemp(prefix="decodebench-bench-vllm-"))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_vllm(python, model_dir, eos, prompts, spec, bs, fixed, dtype):
    """vLLM in its own environment (`--vllm-python`), on the same prompt ids and settings (bench_vllm.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_vllm

    job = {"model_dir": str(model_dir), "prompts": [list(p) for p in prompts], "max_tokens": spec.max_new_tokens,
           "do_sample": bool(spec.params.do_sample), "top_p": spec.params.top_p or 1.0, "max_num_seqs": bs,
           "ignore_eos": fixed, "dtype": dtype, "eos": sorted(eos)}
    return bench_vllm.run(python, job)


def bare_forward_ms(model, tok, prompts, batch: int, context: int, device: str, repeats: int = 5) -> float:
    """The bare decode forward over the engine's static state, `batch` rows attending to `context` columns
    (the prompts, then real-looking columns up to `context`): the floor an engine step cannot go under."""
    from decodebench.decoding.engine.kvcache import Runtime

    rows = [prompts[i % len(prompts)] for i in range(batch)]
    width = max(len(p) for p in rows)
    context = max(context, width + 1)
    rt = Runtime(model)
    kv = rt.allocate(batch, context + 2)
    valid = torch.zeros(batch, context + 2, dtype=torch.bool, device=device)
    toks = torch.zeros_like(valid, dtype=torch.long)
    kv.col = width
    logits, _, lens = rt.prefill(torch.arange(batch, device=device), rows, tok.pad_token_id, valid, toks)
    valid[:, width:context + 1] = True  # generated columns (zero keys): the attention cost of that context
    kv.col = context
    nxt = logits.argmax(-1)[:, None]
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            rt.decode(nxt, (lens + context - width)[:, None], valid)
            sync(device)
            times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def step_ops(model, tok, prompts, spec, batch: int = 8, new_tokens: int = 16, accelerator: bool = False) -> float:
    """Non-view aten ops per decode step outside the model's forward (eager `generate`), counted by
    scripts/step_ops.py; on a GPU each one is a kernel launch. `accelerator`: the paths a GPU takes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_ops import VIEWS, count_by_component

    ops, steps = count_by_component(model, tok, STRATS[spec.name], prompts, batch, new_tokens, accelerator)
    return sum(n for (_, op), n in ops.items() if op not in VIEWS) / max(steps, 1)


def forward_vs_sampling(model, tok, prompts, batch: int, device: str, repeats: int = 10) -> dict:
    """One decode forward at `batch` rows (static state of the prompts) against the whole sampling step
    (temperature 0.7 + top-k 50 + top-p 0.9 and the exponential race) on the same batch."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sampling import time_sampling_step

    from decodebench.decoding import SamplingParams
    from decodebench.decoding.engine.kvcache import Runtime

    rows = [prompts[i % len(prompts)] for i in range(batch)]
    width = max(len(p) for p in rows)
    rt = Runtime(model)
    kv = rt.allocate(batch, width + 2)
    valid = torch.zeros(batch, width + 2, dtype=torch.bool, device=device)
    toks = torch.zeros_like(valid, dtype=torch.long)
    kv.col = width
    logits, _, lens = rt.prefill(torch.arange(batch, device=device), rows, tok.pad_token_id, valid, toks)
    nxt = logits.argmax(-1)[:, None]
    valid[:, width] = True
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        rt.decode(nxt, lens[:, None], valid)
        sync(device)
        times.append(time.perf_counter() - t)
    fwd = sorted(times)[len(times) // 2]
    vocab = model.get_output_embeddings().weight.shape[0]
    samp = time_sampling_step(batch, vocab, device, repeats=repeats)
    top_p = time_sampling_step(batch, vocab, device, repeats=repeats, params=SamplingParams(do_sample=True, top_p=0.95),
                               logits=logits.float())  # the model's own logits at the prompts' ends
    return {"batch": batch, "forward_ms": 1000 * fwd, "sampling_ms": 1000 * samp, "sampling_over_forward": samp / fwd,
            "top_p_ms": 1000 * top_p, "top_p_over_forward": top_p / fwd}


def measure_floor(model, tok, prompts, spec, bs: int, device: str, ours: dict) -> dict:
    """Our ms/step against the bare forward at the same batch and mean context (the "forward floor"
    ratio), and aten ops per step outside the forward (eager, batch 8; on this machine's paths and on an
    accelerator's). Taken right after our engine's run, before any other engine: a process that another
    engine leaves behind (vLLM's engine core shutting down) must not slow the forward it is held to."""
    st = LAST_STATS.get("ours")
    if st is None or not st.step_ms:
        return {}
    width = max(len(p) for p in prompts)
    mean_new = st.generated_tokens / max(st.rows, 1)
    context = int(width + mean_new / 2)
    fwd = bare_forward_ms(model, tok, prompts, min(bs, len(prompts)), context, device)
    return {"forward_ms": fwd, "forward_context": context, "forward_floor": ours["ms_per_step"] / fwd,
            "ops_per_step": step_ops(model, tok, prompts, spec),
            "ops_per_step_accelerator": step_ops(model, tok, prompts, spec, accelerator=True)}


def floor_line(spec, bs: int, r: dict) -> None:
    if "forward_floor" not in r:
        return
    print(f"  {spec.name:6s} batch {bs:4d} step {r['ms_per_step']:.1f} ms = {r['forward_floor']:.2f}x the bare forward "
          f"({r['forward_ms']:.1f} ms at context {r['forward_context']}); chain {r['chain']}; non-view aten "
          f"ops/step outside the forward (eager, batch 8): {r['ops_per_step']:.0f} on this machine's paths, "
          f"{r['ops_per_step_accelerator']:.0f} on an accelerator's")


# each workload's own size when --prompts / --max-new-tokens are not given (the README's rows)
WORKLOADS = {"fixed": (64, 128), "natural": (128, 256)}


def run_workload(model, tok, a, workload: str, device: str, dtype: str, machine: str, engines_of):
    """Every engine, strategy and batch size on one workload: (its JSON record, its prompts)."""
    fixed = workload == "fixed"
    n_prompts = a.prompts or WORKLOADS[workload][0]
    max_new = a.max_new_tokens or WORKLOADS[workload][1]
    cfg = data.DatasetConfig(limit=n_prompts)
    prompts = [tok.apply_chat_template([{"role": "user", "content": p.text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"] for p in data.load_prompts(cfg)]
    print(f"decodebench engine benchmark: {workload} workload, {len(prompts)} chat prompts, "
          f"{'exactly' if fixed else 'up to'} {max_new} new tokens, {device} {dtype} ({machine}), "
          f"torch {torch.__version__}")
    engines = engines_of(fixed)
    rows = []
    for name in a.strategies.split(","):
        spec = build_strategy({**STRATS[name], "max_new_tokens": max_new})
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            res = {}
            for who in a.engines.split(","):
                reset_peak(device)
                sync(device)
                t = time.perf_counter()
                n, extra = engines[who](prompts, spec, bs)
                sync(device)
                s = extra.pop("seconds_inside", None) or time.perf_counter() - t
                if n is None:
                    print(f"  {name:6s} batch {bs:4d} {who:16s} skipped: {extra['skip']}")
                    continue
                res[who] = {"tokens": n, "seconds": s, "tok_s": n / s, "peak_mb": peak_mb(device), **extra}
                if who == "ours":
                    res[who].update(measure_floor(model, tok, prompts, spec, bs, device, res[who]))
            base = res.get("generate", {}).get("tok_s")
            for who, r in res.items():
                r["vs_generate"] = r["tok_s"] / base if base else None
                eff = f"  row-step eff. {r['row_step_efficiency']:.2f}" if "row_step_efficiency" in r else ""
                ratio = f"{r['vs_generate']:.2f}x generate" if base else ""
                print(f"  {name:6s} batch {bs:4d} {who:16s} {r['tok_s']:8.1f} tok/s  {ratio:>16s}  "
                      f"{r['tokens']:6d} tokens in {r['seconds']:7.1f} s  peak {r['peak_mb']:7.0f} MB{eff}")
            floor_line(spec, bs, res.get("ours", {}))
            rows.append({"strategy": name, "batch_size": bs, "engines": res})
    return {"workload": workload, "prompts": len(prompts), "max_new_tokens": max_new, "rows": rows}, prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=["natural", "fixed", "both"], default="natural",
                    help="both: fixed, then natural, in this one run (the README's table)")
    ap.add_argument("--prompts", type=int, default=0, help="default: 64 (fixed), 128 (natural)")
    ap.add_argument("--batch-sizes", default="64")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="default: 128 (fixed), 256 (natural)")
    ap.add_argument("--strategies", default="topp")
    ap.add_argument("--engines", default="ours,ours_static,generate,generate_static")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--vllm-python", default="", help="python of an environment with vLLM (engine `vllm`)")
    ap.add_argument("--step-batch", type=int, default=64, help="batch for the forward-vs-sampling step timing")
    a = ap.parse_args()
    device = models.pick_device(a.device)
    dtype = models.pick_dtype(a.dtype, device)
    model, tok = models.load_model(models.ModelConfig(), device=device, dtype=dtype)
    machine = (torch.cuda.get_device_name() if device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    warm_prompts = [tok("Hello")["input_ids"], tok("Hi there")["input_ids"]]
    warm = build_strategy({**STRATS["greedy"], "max_new_tokens": 4})
    run_ours(model, tok, warm_prompts, warm, 2, device, False)
    run_generate(model, tok, warm_prompts, warm, 2, device, False)
    vllm_dir = vllm_model_dir(models.ModelConfig(), model, tok) if "vllm" in a.engines else None
    vllm_eos = set(eos_ids(model, tok))

    def engines_of(fixed: bool) -> dict:
        return {
            "ours": lambda p, s, b: run_ours(model, tok, p, s, b, device, fixed),
            "ours_static": lambda p, s, b: run_ours(model, tok, p, s, b, device, fixed, continuous=False),
            "generate": lambda p, s, b: run_generate(model, tok, p, s, b, device, fixed),
            "generate_static": lambda p, s, b: run_generate(model, tok, p, s, b, device, fixed, static=True),
            "generate_batch": lambda p, s, b: run_generate_batch(model, tok, p, s, b, device, fixed),
            "vllm": lambda p, s, b: run_vllm(a.vllm_python, vllm_dir, vllm_eos, p, s, b, fixed, dtype),
        }

    names = ["fixed", "natural"] if a.workload == "both" else [a.workload]
    runs = [run_workload(model, tok, a, w, device, dtype, machine, engines_of) for w in names]
    records, prompts = [r for r, _ in runs], runs[-1][1]
    step = forward_vs_sampling(model, tok, prompts, a.step_batch, device)
    print(f"  step at batch {step['batch']}: decode forward {step['forward_ms']:.1f} ms, sampling step "
          f"(chain temperature 0.7 + top-k 50 + top-p 0.9, then the race) {step['sampling_ms']:.1f} ms = "
          f"{step['sampling_over_forward']:.2f}x forward; chain top-p 0.95 alone, then the race: "
          f"{step['top_p_ms']:.1f} ms = {step['top_p_over_forward']:.2f}x forward (the model's logits)")
    out = {"device": device, "dtype": dtype, "machine": machine, "workloads": records, "step": step}
    if len(records) == 1:  # the one-workload record keeps its earlier shape
        out = {"workload": records[0]["workload"], "device": device, "dtype": dtype, "machine": machine,
               "rows": records[0]["rows"], "step": step}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
