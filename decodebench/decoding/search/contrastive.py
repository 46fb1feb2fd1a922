"""Contrastive search (`strategy=contrastive`; Su et al. 2022, "A Contrastive Framework for Neural Text
Generation"), with transformers' parameter names `top_k` and `penalty_alpha`.

At each step every row takes the k most probable next tokens v (after the chain's transforms) and picks

    argmax_v  (1 - alpha) * p(v)  -  alpha * max_j cos(h_v, h_j)

where h_v is the last-layer hidden state of v appended to the context and h_j ranges over the context's
hidden states (prompt included, padding excluded). Batched on the static state: the k candidates of a
row are k queries of ONE forward `[B, k]`, written to columns `[col, col + k)`, all at the row's next
position, each attending to the context and to itself only; the chosen candidate's keys and values are
copied to column `col` (one column per layer), its logits and hidden state kept. So a step costs one
forward of B*k tokens and no copy of the cache.
Rows with a smaller `top_k` than the batch's largest mask their extra candidates out.

Finished rows keep running with the pad token, as in the sampling loop; stop strings, user criteria,
max_time, telemetry and streamers work as there.
"""

from __future__ import annotations

import time

import torch

from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.engine.row_tracker import RowTracker
from decodebench.decoding.engine.batch import BatchContext, Output, Request
from decodebench.decoding.engine.recorder import make_recorder
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec
from decodebench.decoding.engine.streaming import as_streamer


def degeneration_scores(probs: torch.Tensor, cand_h: torch.Tensor, ctx_h: torch.Tensor,
                        ctx_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """`[B, k]` contrastive scores. probs `[B, k]`; cand_h `[B, k, H]`; ctx_h `[B, S, H]`; ctx_mask `[B, S]`."""
    c = cand_h / cand_h.norm(dim=-1, keepdim=True)
    h = ctx_h / ctx_h.norm(dim=-1, keepdim=True)
    cos = torch.einsum("bkh,bsh->bks", c, h)
    cos = cos.masked_fill(~ctx_mask.bool()[:, None, :], float("-inf"))  # padding is not context
    return (1.0 - alpha) * probs - alpha * cos.amax(dim=-1)


@torch.inference_mode()
def contrastive_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    runner, dev = ctx.runner, ctx.runner.device
    t0 = time.perf_counter()
    alpha = float(spec.search["penalty_alpha"])
    B, L = len(reqs), spec.max_new_tokens
    k_row = torch.tensor([r.params.top_k for r in reqs], device=dev)
    K = int(max(r.params.top_k for r in reqs))
    width = max(len(r.prompt_ids) for r in reqs)
    cap = width + L + K
    kv = runner.allocate(B, cap)
    kv.col, kv.lo = width, 0
    tokens = torch.full((B, cap), ctx.pad_id, dtype=torch.long, device=dev)
    valid = torch.zeros((B, cap), dtype=torch.bool, device=dev)
    chain = LogitsChain.from_rows([r.params for r in reqs], vocab_size=ctx.vocab_size, eos_token_id=ctx.eos, device=dev, tokenizer=ctx.tokenizer)
    recorder = make_recorder(ctx.record, B, L, dev)
    streamer = as_streamer(ctx.streamer)
    tracker = RowTracker(B, spec, ctx, t0, streamer)
    rows = torch.arange(B, device=dev)
    cand_ok = torch.arange(K, device=dev)[None, :] < k_row[:, None]  # [B, K]

    logits, hidden, pos = runner.prefill(rows, [r.prompt_ids for r in reqs], ctx.pad_id, valid, tokens)
    ctx_h = torch.zeros((B, width + L, hidden.shape[-1]), dtype=hidden.dtype, device=dev)  # context states
    ctx_h[:, :width] = hidden
    for step in range(L):
        col = kv.col
        processed = chain(logits, DecodeState(tokens[:, :col], valid[:, :col], width, step))
        top_p, top_ids = torch.topk(processed.softmax(dim=-1), K, dim=-1)  # [B, K]
        # the K candidates are K queries at the same position, each seeing the context and itself
        valid[:, col:col + K] = True
        logits_k, cand_h = runner.decode(top_ids, pos[:, None].expand(B, K), valid, candidates=True)
        valid[:, col:col + K] = False
        score = degeneration_scores(top_p, cand_h, ctx_h[:, :col], valid[:, :col], alpha)
        sel = score.masked_fill(~cand_ok, float("-inf")).argmax(dim=-1)  # [B]
        tok = top_ids[rows, sel]
        kv.copy_column(col + sel, col)  # the chosen candidate's keys and values stay in column col
        tokens[:, col] = tok
        valid[:, col] = True
        ctx_h[:, col] = cand_h[rows, sel]
        recorder.on_step(step, logits, processed, tok, ~tracker.finished)
        logits = logits_k[rows, sel]
        pos += 1
        kv.col += 1
        tok, done = tracker.push(step, tok)
        if done:
            break
    chain.raise_if_nan()
    outs = tracker.outputs(recorder.finalize())
    if streamer is not None:
        streamer.close(outs)
    return outs


def _validate(spec: StrategySpec) -> None:
    a = spec.search.get("penalty_alpha")
    if a is None or isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
        raise ValueError(f"penalty_alpha must be in [0, 1] for contrastive search, got {a!r}")
    k = spec.params.top_k
    if k is None or k < 1:
        raise ValueError(f"top_k must be >= 1 for contrastive search (the candidates per step), got {k!r}")
    if spec.params.do_sample:
        raise ValueError("do_sample must be false for contrastive search (it is deterministic)")
    if spec.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences must be 1 for contrastive search (it is deterministic), "
                         f"got {spec.num_return_sequences}")


METHODS.register("contrastive", SearchMethod(name="contrastive", run=contrastive_batch, validate=_validate,
                                             needs_hidden_states=True))
