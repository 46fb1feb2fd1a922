"""A fixed batch of rows, one token per row per step, with hooks: the loop that CoT-decoding, DeepConf and
power sampling share (built on the engine's public primitives: `Runtime.allocate/prefill/decode`,
`LogitsChain`, `sample`, `RowTracker`).

    before(step, raw, processed, live) -> processed   may change the logits to sample from (DeepConf's
                                                      forced EOS); raw and processed are `[B, V]`
    after(step, raw, processed, tok, live)            sees the chosen tokens `[B]` (log-probs, margins)

`first` `[B]` replaces the first sampled token (CoT-decoding's branches). The noise of row b at step s is
`sample(..., keys[b], s)`, as in the running batch, so a row's tokens never depend on its batch-mates and a
plain run of this loop equals `strategy=sample` token for token.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
from torch import Tensor

from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.engine.row_tracker import RowTracker
from decodebench.decoding.engine.batch import BatchContext, Output, Request, request_keys
from decodebench.decoding.sampling import sample
from decodebench.decoding.search.spec import StrategySpec


@torch.inference_mode()
def run_rows(reqs: list[Request], spec: StrategySpec, ctx: BatchContext, *, keys: Optional[Tensor] = None,
             first: Optional[Tensor] = None, before: Optional[Callable] = None,
             after: Optional[Callable] = None) -> list[Output]:
    """Generate up to `spec.max_new_tokens` tokens for each row (stop strings, EOS and max_time as the
    tracker says); returns one Output per row."""
    rt, dev, t0 = ctx.runner, ctx.runner.device, time.perf_counter()
    B, L = len(reqs), spec.max_new_tokens
    width = max(len(r.prompt_ids) for r in reqs)
    kv = rt.allocate(B, width + L)
    kv.col, kv.lo = width, 0
    tokens = torch.full((B, width + L), ctx.pad_id, dtype=torch.long, device=dev)
    valid = torch.zeros((B, width + L), dtype=torch.bool, device=dev)
    chain = LogitsChain.from_rows([r.params for r in reqs], vocab_size=ctx.vocab_size, eos_token_id=ctx.eos,
                                  device=dev, tokenizer=ctx.tokenizer)
    keys = request_keys(reqs, dev) if keys is None else keys
    tracker = RowTracker(B, spec, ctx, t0)
    logits, _, pos = rt.prefill(torch.arange(B, device=dev), [r.prompt_ids for r in reqs], ctx.pad_id, valid, tokens)
    for step in range(L):
        col, live = kv.col, ~tracker.finished
        row_step = torch.full((B,), step, dtype=torch.long, device=dev)
        processed = chain(logits, DecodeState(tokens[:, :col], valid[:, :col], width, step, row_step=row_step,
                                              keys=keys))
        if before is not None:
            processed = before(step, logits, processed, live)
        tok = sample(processed, keys, step, chain.sample_mode, support=None if before else chain.support)
        if step == 0 and first is not None:
            tok = first
        if after is not None:
            after(step, logits, processed, tok, live)
        tok, done = tracker.push(step, tok)
        if done:
            break
        tokens[:, col], valid[:, col] = tok, True
        out, _ = rt.decode(tok[:, None], pos[:, None], valid)
        logits, pos, kv.col = out[:, -1], pos + 1, col + 1
    chain.raise_if_nan()
    return tracker.outputs(None)
