"""Time one whole sampling step: temperature + top-k + top-p chain, then the seeded sample.

Ours (`LogitsChain` + `sample`) against two references on the same logits:
  * naive: one full-vocabulary sort, top-k and top-p masks on the sorted row, softmax, multinomial;
  * hf: transformers' Temperature/TopK/TopP warpers, softmax, multinomial (what `generate()` runs).

    python scripts/bench_sampling.py                       # batch 64, V = 49152, CPU
    python scripts/bench_sampling.py --batch 8 --repeats 50
    python scripts/bench_sampling.py --filters [--logits saved.pt]   # each filter: sort vs candidates

`time_sampling_step(batch, vocab, device, repeats)` is importable (the engine's forward-step benchmark
uses it). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch

from decodebench.decoding import DecodeState, LogitsChain, SamplingParams, row_keys, sample

TEMPERATURE, TOP_K, TOP_P = 0.7, 50, 0.9


def _logits(batch: int, vocab: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, vocab, generator=g) * 3).to(device)  # a spread like an LM's logits


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(step: Callable[[int], torch.Tensor], device, repeats: int) -> float:
    """Median seconds per call, after two warm-up calls."""
    for i in range(2):
        step(i)
    times = []
    for i in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_sampling_step(batch: int = 64, vocab: int = 49152, device="cpu", repeats: int = 20,
                       params: SamplingParams | None = None, logits: torch.Tensor | None = None) -> float:
    """Seconds per step for a chain plus seeded sampling, called as the engine's step calls them (support,
    candidates, probe). `params` default: temperature, top_k, top_p (a top-k-first chain: cheap, because
    top-k bounds what top-p sees); pass `SamplingParams(do_sample=True, top_p=0.95)` for top-p alone.
    `logits` `[batch, vocab]`: a model's own (default: randn x 3, whose nuclei are far wider than an LM's)."""
    logits = _logits(batch, vocab, device) if logits is None else logits
    params = params or SamplingParams(do_sample=True, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)
    chain = LogitsChain.from_rows([params] * batch, vocab_size=vocab, eos_token_id=None, device=device)
    keys = row_keys(0, [str(i) for i in range(batch)], [0] * batch, device=device)
    empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
    return _time(lambda s: sample(chain(logits, DecodeState(empty, empty, 0, s)), keys, s, chain.sample_mode,
                                  support=chain.support, candidates=chain.candidates, probe=chain.truncates),
                 device, repeats)


def naive_step(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The textbook sort-based step: sort once, mask by rank and cumulative mass, multinomial."""
    x = logits / TEMPERATURE
    sorted_x, idx = torch.sort(x, descending=True)
    probs = sorted_x.softmax(-1)
    rank = torch.arange(x.shape[-1], device=x.device)
    drop = (rank >= TOP_K) | ((probs.cumsum(-1) - probs) > TOP_P)
    sorted_x = sorted_x.masked_fill(drop, float("-inf"))
    x = torch.empty_like(x).scatter_(1, idx, sorted_x)
    return torch.multinomial(x.softmax(-1), 1, generator=gen)[:, 0]


def time_reference_step(batch: int = 64, vocab: int = 49152, device="cpu", repeats: int = 20,
                        kind: str = "naive") -> float:
    """Seconds per step for a reference: "naive" (one sort) or "hf" (transformers' warpers)."""
    logits = _logits(batch, vocab, device)
    gen = torch.Generator(device=device).manual_seed(0)
    if kind == "naive":
        return _time(lambda s: naive_step(logits, gen), device, repeats)
    from transformers.generation import logits_process as hf

    procs = hf.LogitsProcessorList([hf.TemperatureLogitsWarper(TEMPERATURE), hf.TopKLogitsWarper(TOP_K),
                                    hf.TopPLogitsWarper(TOP_P)])
    ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
    return _time(lambda s: torch.multinomial(procs(ids, logits).softmax(-1), 1, generator=gen), device, repeats)


def lm_like_logits(batch: int, vocab: int, device, seed: int = 0) -> torch.Tensor:
    """Zipf-shaped rows (`-s log rank` plus noise, s in [1.3, 2.3]): nuclei of a few to a few thousand
    tokens, as a real LM's (the Gaussian rows of `_logits` have nuclei of half the vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    s = 1.3 + torch.rand(batch, 1, generator=g)
    rank = torch.stack([torch.randperm(vocab, generator=g) for _ in range(batch)]).float() + 1
    return (-s * rank.log() + 0.3 * torch.randn(batch, vocab, generator=g)).to(device)


def time_filters(batch: int = 64, vocab: int = 49152, device="cpu", repeats: int = 5,
                 logits_file: str | None = None) -> dict:
    """ms per call of each filter, full-sort reference path against the candidate path (same bits), and
    `process_logits` with one filter (what a study of that filter runs). `logits_file`: a saved `[N, V]`
    tensor (e.g. an LM's logits), read as data (`weights_only`), cycled to `batch` rows."""
    from decodebench.decoding import process_logits
    from decodebench.decoding.transforms import filters as W
    from decodebench.decoding.transforms import llamacpp as L

    if logits_file:
        x = torch.load(logits_file, weights_only=True).float()
        x = x[torch.arange(batch) % x.shape[0]].to(device)
    else:
        x = lm_like_logits(batch, vocab, device)
    runs = {
        "top_p=0.95 sort": lambda s: W.top_p(x, 0.95, candidates=0),
        "top_p=0.95 candidates": lambda s: W.top_p(x, 0.95),
        "mirostat_v2 mu=10 sort": lambda s: L.mirostat_v2(x, 10.0, candidates=0),
        "mirostat_v2 mu=10 candidates": lambda s: L.mirostat_v2(x, 10.0),
        "process_logits(top_p=0.95)": lambda s: process_logits(x, top_p=0.95),
        "process_logits(min_p=0.05)": lambda s: process_logits(x, min_p=0.05),
        "process_logits(typical_p=0.95)": lambda s: process_logits(x, typical_p=0.95),
        "process_logits(eta_cutoff=0.0009)": lambda s: process_logits(x, eta_cutoff=0.0009),
        "process_logits(epsilon_cutoff=0.0003)": lambda s: process_logits(x, epsilon_cutoff=0.0003),
    }
    runs.update(_top_p_steps(x, device))
    return {name: _time(fn, device, repeats) * 1e3 for name, fn in runs.items()}


def _top_p_steps(x: torch.Tensor, device) -> dict:
    """The engine's top-p step: the chain (sort-free top-p 0.95), then the race over its candidates (the
    engine's path) or over the whole row (what it ran before); and the races alone, on the chain's output."""
    b, v = x.shape
    chain = LogitsChain.from_rows([SamplingParams(do_sample=True, top_p=0.95)] * b, vocab_size=v,
                                  eos_token_id=None, device=device)
    keys = row_keys(0, [str(i) for i in range(b)], [0] * b, device=device)
    empty = torch.zeros(b, 0, dtype=torch.long, device=device)
    out = chain(x, DecodeState(empty, empty, 0, 0))
    cands = chain.candidates
    inside = 0.0 if cands is None else cands[1].float().mean().item()

    def step(s: int, within: bool) -> torch.Tensor:
        y = chain(x, DecodeState(empty, empty, 0, s))
        return sample(y, keys, s, True, candidates=chain.candidates if within else None)

    return {
        f"top_p=0.95 chain + race over candidates ({inside:.0%} rows inside)": lambda s: step(s, True),
        "top_p=0.95 chain + race over the whole row": lambda s: step(s, False),
        "race over candidates (chain's output)": lambda s: sample(out, keys, s, True, candidates=cands),
        "race over the whole row (chain's output)": lambda s: sample(out, keys, s, True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best median counts")
    ap.add_argument("--filters", action="store_true", help="time each filter, sort against candidates")
    ap.add_argument("--logits", default=None, help="with --filters: a saved [N, V] logits tensor to use")
    args = ap.parse_args()
    if args.filters:
        ms = time_filters(args.batch, args.vocab, args.device, args.repeats, args.logits)
        for name, t in ms.items():
            print(f"  {name:40s} {t:8.2f} ms")
        print(json.dumps({"filters_ms": ms, "batch": args.batch, "vocab": args.vocab, "logits": args.logits}))
        return
    shape = dict(batch=args.batch, vocab=args.vocab, device=args.device, repeats=args.repeats)
    # Interleave the three so that a busy machine slows them alike; keep each one's best round.
    best = {"ours": [], "naive": [], "hf": []}
    for _ in range(args.rounds):
        best["ours"].append(time_sampling_step(**shape))
        best["naive"].append(time_reference_step(**shape, kind="naive"))
        best["hf"].append(time_reference_step(**shape, kind="hf"))
    ours, naive, hf = (min(best[k]) for k in ("ours", "naive", "hf"))
    print(f"batch {args.batch}, V {args.vocab}, {args.device}, {torch.get_num_threads()} threads, "
          f"temperature {TEMPERATURE} + top_k {TOP_K} + top_p {TOP_P} + sample "
          f"(best of {args.rounds} rounds, median of {args.repeats} steps each)")
    print(f"  ours (chain + exponential race)  {ours * 1e3:8.2f} ms/step")
    print(f"  naive (sort + multinomial)       {naive * 1e3:8.2f} ms/step   {naive / ours:5.1f}x ours")
    print(f"  hf warpers + multinomial         {hf * 1e3:8.2f} ms/step   {hf / ours:5.1f}x ours")
    print(json.dumps({"ours_ms": ours * 1e3, "naive_ms": naive * 1e3, "hf_ms": hf * 1e3,
                      "naive_over_ours": naive / ours, "hf_over_ours": hf / ours, **shape}))


if __name__ == "__main__":
    main()
