"""Power sampling (`strategy=power_sampling`): Karan & Du 2025, "Reasoning with Sampling: Your Base Model is
Smarter Than You Think", as the authors' `mcmc_power_samp` (aakaran/reasoning-with-sampling,
llm_experiments/power_samp_utils.py) runs it.

The target is the whole-sequence distribution p(x)^alpha (`power_alpha`), which is not low-temperature
sampling: low temperature sharpens each next-token distribution, p^alpha re-weights whole continuations
(a token with few good continuations loses). It is sampled by Metropolis-Hastings with the base model at
temperature 1/alpha (the strategy's other warpers too, e.g. `top_k`) as the proposal, blockwise:
`max_new_tokens` is cut into `block_num` blocks; after each block is sampled, `mcmc_steps` times a position
i of the output so far is drawn uniformly, the suffix from i to the current length is resampled from the
proposal, and the new sequence is accepted with probability min(1, r),

    log r = alpha * log p(new suffix) + log q(old suffix) - alpha * log p(old suffix) - log q(new suffix)

(`log_accept_ratio`). A row ends after the block in which its sequence contains EOS (cut after it).

As in the code: a proposal that stops at EOS before the current length is compared with the current
suffix's first tokens only (the same number), and every proposal is a fresh forward over its prefix (no
KV reuse), so a run costs about mcmc_steps * (mean suffix) forwards per block. A row's draws (positions,
coins, proposal noise) come from its own key and the proposal's index, so its output never depends on its
batch-mates. Metrics: `mh_acceptance_rate` (accepted / proposed), `forward_passes_per_token`; each record
carries its own `power_acceptance_ratio`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from decodebench.decoding.search.row_loop import run_rows
from decodebench.decoding.engine.batch import BatchContext, BatchStats, Output, Request, request_keys
from decodebench.decoding.sampling import row_uniform
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec

IDX_STREAM, ACCEPT_STREAM = 0x90E1, 0x90E2


def log_accept_ratio(target_prop, norm_cur, target_cur, norm_prop) -> float:
    """The code's `log_r`: target log-probs (alpha * log p) of the proposed and current suffixes, and
    their proposal log-probs (log q)."""
    return sum(target_prop) + sum(norm_cur) - sum(target_cur) - sum(norm_prop)


@dataclass
class Chain:
    """One row's state: generated tokens, their proposal (norm) and target (unnorm) log-probs."""

    gen: list = field(default_factory=list)
    lpn: list = field(default_factory=list)
    lpu: list = field(default_factory=list)
    done: bool = False
    attempts: int = 0
    accepts: int = 0


def power_sample(propose: Callable, coins: Callable, rows: int, max_new_tokens: int, block_num: int,
                 mcmc_steps: int, eos: set) -> list[Chain]:
    """The blockwise MH loop over `rows` chains at once.

    propose(rows, prefixes, lengths, call) -> [(tokens, log q, alpha log p)]: each row's continuation of its
    prefix (generated tokens) by up to `length` tokens, stopping after EOS; `call` numbers the proposals.
    coins(rows, call) -> (u_index, u_accept): per-row uniforms in (0, 1) for that proposal.
    """
    jump, chains, call = max_new_tokens // block_num, [Chain() for _ in range(rows)], 0
    for _ in range(block_num):
        live = [i for i, c in enumerate(chains) if not c.done]
        if not live:
            break
        for i, (t, n, u) in zip(live, propose(live, [chains[i].gen for i in live], [jump] * len(live), call)):
            chains[i].gen, chains[i].lpn, chains[i].lpu = chains[i].gen + t, chains[i].lpn + n, chains[i].lpu + u
        call += 1
        for _ in range(mcmc_steps):
            u_idx, u_acc = coins(live, call)
            idx = [min(int(u * len(chains[i].gen)), len(chains[i].gen) - 1) for i, u in zip(live, u_idx)]
            props = propose(live, [chains[i].gen[:k] for i, k in zip(live, idx)],
                            [len(chains[i].gen) - k for i, k in zip(live, idx)], call)
            call += 1
            for i, k, ua, (t, n, u) in zip(live, idx, u_acc, props):
                c, s = chains[i], k + len(t)
                c.attempts += 1
                if ua < math.exp(min(log_accept_ratio(u, c.lpn[k:s], c.lpu[k:s], n), 700.0)):
                    c.accepts += 1
                    c.gen, c.lpn, c.lpu = c.gen[:k] + t, c.lpn[:k] + n, c.lpu[:k] + u
        for i in live:
            c = chains[i]
            cut = next((j for j, x in enumerate(c.gen) if x in eos), None)
            if cut is not None:
                c.gen, c.lpn, c.lpu, c.done = c.gen[:cut + 1], c.lpn[:cut + 1], c.lpu[:cut + 1], True
    return chains


def _salt(call: int) -> int:
    x = ((call + 1) * 0x9E3779B97F4A7C15) & (2**64 - 1)
    return x - 2**64 if x >= 2**63 else x


def model_proposer(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> Callable:
    """`propose` for `power_sample` on the model: the rows' prompts plus prefixes, sampled at temperature
    1 / power_alpha through the strategy's chain, each proposal with its own noise key."""
    alpha = float(spec.search["power_alpha"])
    dev = ctx.runner.device
    keys = request_keys(reqs, dev)
    params = [r.params.replace(do_sample=True, temperature=1.0 / alpha) for r in reqs]
    inner = dataclasses.replace(ctx, stop=None, streamer=None, stats=BatchStats())  # the run's timings stay clean

    def propose(rows, prefixes, lengths, call):
        sub = [Request(reqs[i].prompt_id, list(reqs[i].prompt_ids) + list(p), reqs[i].sample_index, params[i],
                       reqs[i].seed) for i, p in zip(rows, prefixes)]
        n = max(lengths)
        lpn = torch.zeros((len(rows), n), dtype=torch.float64, device=dev)
        lpu = torch.zeros_like(lpn)

        def after(step, raw, processed, tok, live):
            lpn[:, step] = processed.log_softmax(-1).gather(1, tok[:, None])[:, 0].double()
            lpu[:, step] = alpha * raw.log_softmax(-1).gather(1, tok[:, None])[:, 0].double()

        one = dataclasses.replace(spec, max_new_tokens=n, max_time=None)
        outs = run_rows(sub, one, inner, keys=keys[rows] ^ _salt(call), after=after)
        hn, hu = lpn.tolist(), lpu.tolist()
        res = []
        for j, (o, m) in enumerate(zip(outs, lengths)):
            t = o.token_ids[:m]
            res.append((t, hn[j][:len(t)], hu[j][:len(t)]))
        return res

    return propose


def model_coins(reqs: list[Request], device) -> Callable:
    keys = request_keys(reqs, device)

    def coins(rows, call):
        k = keys[rows]
        return row_uniform(k, call, IDX_STREAM).tolist(), row_uniform(k, call, ACCEPT_STREAM).tolist()

    return coins


@torch.inference_mode()
def power_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    s, t0 = spec.search, time.perf_counter()
    chains = power_sample(model_proposer(reqs, spec, ctx), model_coins(reqs, ctx.runner.device), len(reqs),
                          spec.max_new_tokens, int(s["block_num"]), int(s["mcmc_steps"]), set(ctx.eos))
    # the output is known only when the chain ends: first-token time is the batch's, per-token time its share
    now, steps = ctx.first_token(t0), max(len(c.gen) for c in chains)
    ctx.stats.steps += steps
    ctx.stats.step_ms.append(1000 * (now - t0) / max(steps, 1))
    ex = ctx.stats.extra
    ex["mh_attempts"] = ex.get("mh_attempts", 0) + sum(c.attempts for c in chains)
    ex["mh_accepts"] = ex.get("mh_accepts", 0) + sum(c.accepts for c in chains)
    eos = set(ctx.eos)
    outs = []
    for c in chains:
        # stop strings cut the finished chain (the chain itself targets p^alpha over whole blocks)
        cut = ctx.stop.first_stop(c.gen) if ctx.stop is not None and ctx.stop.stops else None
        gen = c.gen if cut is None else c.gen[:cut]
        reason = "stop" if cut is not None else "eos" if gen and gen[-1] in eos else "length"
        outs.append(Output(gen, reason, extra={"power_acceptance_ratio": c.accepts / max(c.attempts, 1)}))
    return outs


def power_metrics(extra: dict) -> dict:
    """mh_acceptance_rate: accepted / proposed suffixes, over the run."""
    return {"mh_acceptance_rate": extra["mh_accepts"] / max(extra["mh_attempts"], 1)} if "mh_attempts" in extra else {}


def _validate(spec: StrategySpec) -> None:
    s = spec.search
    a = s.get("power_alpha")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 0 or math.isinf(a):
        raise ValueError(f"power_alpha must be a number > 0 (the target is p^power_alpha), got {a!r}")
    for key, lo in (("mcmc_steps", 1), ("block_num", 1)):
        v = s.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}")
    if spec.max_new_tokens % s["block_num"]:
        raise ValueError(f"block_num must divide max_new_tokens ({spec.max_new_tokens}) into equal blocks, "
                         f"got {s['block_num']}")
    if spec.params.temperature not in (None, 1.0):
        raise ValueError("temperature must be unset for power_sampling: its proposal runs at 1 / power_alpha")
    if not spec.params.do_sample:
        raise ValueError("do_sample must be true for power_sampling (the proposal samples)")
    if spec.stopping or spec.max_time:
        raise ValueError("stopping and max_time must be empty for power_sampling (a chain ends only when its "
                         "blocks are done; stop strings cut the finished chain)")


METHODS.register("power_sampling", SearchMethod(name="power_sampling", run=power_batch, validate=_validate,
                                                supports_record=False))
