"""Stochastic beam search (`strategy=stochastic_beam`; Kool, van Hoof and Welling 2019, "Stochastic Beams
and Where to Find Them: The Gumbel-Top-k Trick for Sampling Sequences Without Replacement").

k = num_beams sequences are sampled WITHOUT replacement from the model's (transformed) distribution over
whole sequences, each with its exact log-probability. Every partial sequence y carries its
log-probability phi(y) and a perturbed value G(y); the root has G = 0. Each step, for each live beam,
the children y' get phi(y') = phi(y) + log q(y'|y) and Gumbel noise g(y') = phi(y') + Gumbel, and are
shifted so that their maximum equals the parent's G (the Gumbel-max conditioned on the parent):

    G(y') = -log(exp(-G(y)) - exp(-Z) + exp(-g(y'))),   Z = max over the children of g

(computed in Kool's stable form). The k largest G over all children of all beams (finished beams carry
over as themselves) become the next beams. When every beam has ended, the k beams sorted by G are k
distinct samples; the first is an ordinary sample from q.

q is the distribution the chain's transforms give (temperature, top-k, ... as for sampling; softmax
over the processed log-probs). Noise for the children of beam slot j at step t is
`exponential_noise(row_keys(seed, prompt id, j), t)`: a prompt's samples depend only on (seed, prompt
id), never on its batch-mates. Batched like beam search: every beam of every prompt in one forward.
Output: `score` = the sample's exact log-probability under q; `extra` has `gumbel` (its G) and
`logprob_model`, its log-probability under the untransformed model.
"""

from __future__ import annotations

import math
import time

import torch

from decodebench.decoding.search.beam import (BeamRows, Hyps, Prompts, check_common, end_codes, gather_beams,
                                       make_stream, reason_names, register_beam_type, step_is_last)
from decodebench.decoding.engine.batch import AsyncFlag, BatchContext, Request
from decodebench.decoding.sampling import exponential_noise, row_keys
from decodebench.decoding.engine.stopping import LENGTH
from decodebench.decoding.search.spec import StrategySpec

NEG_INF = float("-inf")


def gumbel(keys: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """`[N, V]` standard Gumbel noise from the project's counter-based Exp(1) noise: -log(E)."""
    return exponential_noise(keys, step, vocab_size).log_().neg_()


def shift_gumbel(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Children's perturbed values `g` `[N, V]` shifted so their max equals `target` `[N]` (Kool's eq. 23).

    `u = T - g + log(1 - exp(g - Z))`, `G = T - max(u, 0) - log(1 + exp(-|u|))`: the argmax child gets T
    exactly; a removed child (g = -inf) stays -inf; a dead parent (T = -inf) gives -inf everywhere.
    """
    z = g.amax(dim=-1, keepdim=True)
    t = target[:, None]
    u = t - g + torch.log1p(-torch.exp(g - z))
    out = t - torch.relu(u) - torch.log1p(torch.exp(-u.abs()))
    return out.masked_fill(torch.isneginf(t) | torch.isneginf(g), NEG_INF)


def slot_keys(reqs: list[Request], k: int, device) -> torch.Tensor:
    """`[P*k]` noise keys: (seed, prompt id, beam slot) per row."""
    return torch.cat([row_keys(r.seed, [r.prompt_id] * k, list(range(k))) for r in reqs]).to(device)


def stochastic_search(ctx: BatchContext, groups: Prompts, spec: StrategySpec) -> Hyps:
    k = int(spec.search["num_beams"])
    P, L, V, dev = len(groups.reqs), spec.max_new_tokens, ctx.vocab_size, ctx.runner.device
    t0 = time.perf_counter()
    deadline = t0 + spec.max_time if spec.max_time else None
    rows = BeamRows(ctx, groups.reqs, k)
    keys = slot_keys(groups.reqs, k, dev)
    stream = make_stream(spec, ctx, groups, P)
    base = torch.arange(P, device=dev)[:, None] * k

    seq = torch.full((P, k, L), ctx.pad_id, dtype=torch.long, device=dev)
    phi = torch.zeros((P, k), dtype=torch.float32, device=dev)
    raw = torch.zeros((P, k), dtype=torch.float32, device=dev)  # log-prob under the untransformed model
    G = torch.full((P, k), NEG_INF, device=dev)
    G[:, 0] = 0.0  # the root
    alive = torch.ones((P, k), dtype=torch.bool, device=dev)
    length = torch.zeros((P, k), dtype=torch.long, device=dev)
    why = torch.full((P, k), LENGTH, dtype=torch.long, device=dev)
    flag = AsyncFlag(dev)

    logits = rows.prefill()
    steps = 0
    for t in range(L):
        lp_raw = torch.log_softmax(logits, dim=-1)
        lq = torch.log_softmax(rows.logprobs(logits, seq.view(P * k, L), t), dim=-1)  # q, normalised
        if t == 0:
            t_first = ctx.first_token(t0)
        last = step_is_last(t, spec, deadline)
        g = (phi.view(-1, 1) + lq) + gumbel(keys, t, V)
        child = shift_gumbel(g, G.view(-1)).view(P, k, V)
        # a finished beam competes as itself, in its pad column; a live beam as its children
        keep_self = torch.full_like(child, NEG_INF)
        keep_self[:, :, ctx.pad_id] = G
        child = torch.where(alive[:, :, None], child, keep_self)
        top_G, top_i = torch.topk(child.view(P, k * V), k)
        parent, tok = top_i // V, top_i % V
        was_alive = gather_beams(alive, parent)
        cand = gather_beams(seq, parent)
        cand[:, :, t] = torch.where(was_alive, tok, cand[:, :, t])
        flat = (base + parent) * V + tok  # the parent's row, the chosen token
        phi = gather_beams(phi, parent) + torch.where(was_alive, lq.view(-1)[flat], 0.0)
        raw = gather_beams(raw, parent) + torch.where(was_alive, lp_raw.view(-1)[flat], 0.0)
        code = end_codes(ctx, rows.eos, tok, cand, t, last)
        ends = was_alive & (code >= 0)
        length = torch.where(was_alive, t + 1, gather_beams(length, parent))
        why = torch.where(ends, code, gather_beams(why, parent))
        alive = was_alive & ~ends & ~torch.isneginf(top_G)
        seq, G = cand, top_G
        if stream is not None:  # finished samples count with their lengths, not their padding
            stream.step(t, torch.where(alive[:, :, None], seq, seq[:, :1]), seq, length, ~alive)
        steps = t + 1
        flag.push(~alive.any())
        if last >= 0 or flag.ready_and_true():
            break
        parents = parent + base
        logits = rows.advance(torch.where(alive, tok, ctx.pad_id).reshape(-1), parents.reshape(-1), t)
    ctx.decode_done(t_first, steps)
    rows.chain.raise_if_nan()

    n = spec.num_return_sequences
    names = reason_names(ctx)
    seq_l, len_l, why_l = seq[:, :n].tolist(), length[:, :n].tolist(), why[:, :n].tolist()
    phi_l, G_l, raw_l = phi[:, :n].tolist(), G[:, :n].tolist(), raw[:, :n].tolist()
    tokens = [[seq_l[p][j][: len_l[p][j]] for j in range(n)] for p in range(P)]
    valid = [[math.isfinite(x) for x in row] for row in G_l]
    hyps = Hyps(tokens, [[x if v else None for x, v in zip(r, vr)] for r, vr in zip(phi_l, valid)],
                [[names[w] for w in row] for row in why_l])
    hyps.row_extra = [[{"gumbel": G_l[p][j] if valid[p][j] else None, "logprob_model": raw_l[p][j],
                        **({} if valid[p][j] else {"valid": False})} for j in range(n)] for p in range(P)]
    if stream is not None:
        hyps.extra = stream.finish([tk[0] for tk in tokens])
    return hyps


def _validate(spec: StrategySpec) -> None:
    check_common(spec, "stochastic beam search")
    if spec.search.get("stream") == "lookahead":
        raise ValueError("stream must be safe for stochastic beam search (samples, not a search with a leader)")


stochastic_beam_batch = register_beam_type("stochastic_beam", "stochastic beam search", stochastic_search, _validate)
