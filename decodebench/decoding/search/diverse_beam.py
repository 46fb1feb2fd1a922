"""Diverse (group) beam search (`strategy=diverse_beam`; Vijayakumar et al. 2016, "Diverse Beam Search"),
with the semantics of transformers' former `_group_beam_search` (v4.x, before it moved to Hub code).

The nb beams of a prompt form G groups of S = nb / G. Each step, group g (in order) scores its beams'
continuations after subtracting `diversity_penalty` x (how many beams of groups 0..g-1 chose that token
at this step), then runs a beam-search step of its own: the top max(2, 1 + #eos) * S candidates in rank
order; those that end (EOS, stop rule) among the first S go to the group's finished list (capacity S,
score sum_logprob / length ** length_penalty, lengths counting the EOS), the first S that do not end
keep running. A group is done when its list is full and no running beam can beat its worst entry
(`early_stopping` True/False/"never" as in transformers' `BeamHypotheses.is_done`); a done group's beams
emit the pad token (which, as in transformers, later groups see in their Hamming counts). At the end the
running beams of groups not done join their lists, and the n best of all groups are returned.

Batched: every beam of every prompt is one row of a single forward per step; the per-group work is
vectorised over prompts (a Python loop over the G groups only, since group g needs groups < g). The
diversity penalty is applied before the other transforms (transformers applies it after logit_bias;
the two additions commute up to rounding). Finished-list scores are kept in float64, as transformers
keeps them as Python floats.
"""

from __future__ import annotations

import time

import torch

from decodebench.decoding.search.beam import (BeamRows, Hyps, Prompts, check_common, end_codes, gather_beams,
                                       make_stream, reason_names, register_beam_type, step_is_last)
from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.engine.batch import AsyncFlag, BatchContext
from decodebench.decoding.engine.stopping import LENGTH
from decodebench.decoding.search.spec import StrategySpec

NEG = -1.0e9


def _is_done(count, worst, best, n: int, S: int, L: int, lp_pen: float, early) -> torch.Tensor:
    """transformers' BeamHypotheses.is_done, vectorised: `[P]` for one group (float64 scores)."""
    full = count >= S
    if early is True:
        return full
    length = L if (early == "never" and lp_pen > 0.0) else n
    return full & (worst >= best / (length ** lp_pen))


def diverse_search(ctx: BatchContext, groups: Prompts, spec: StrategySpec) -> Hyps:
    s = spec.search
    nb, G = int(s["num_beams"]), int(s["num_beam_groups"])
    S, pen, lp_pen, early = nb // G, float(s["diversity_penalty"]), float(s["length_penalty"]), s["early_stopping"]
    P, L, V, dev = len(groups.reqs), spec.max_new_tokens, ctx.vocab_size, ctx.runner.device
    t0 = time.perf_counter()
    deadline = t0 + spec.max_time if spec.max_time else None
    Kg = max(2, 1 + len(ctx.eos)) * S
    rows = BeamRows(ctx, groups.reqs, nb)
    chains = [LogitsChain.from_rows([r.params for r in groups.reqs for _ in range(S)], vocab_size=V,
                                    eos_token_id=ctx.eos, device=dev, tokenizer=ctx.tokenizer) for _ in range(G)]
    stream = make_stream(spec, ctx, groups, P)
    rank = torch.arange(Kg, device=dev)
    base = torch.arange(P, device=dev)[:, None] * nb

    run_seq = torch.full((P, nb, L), ctx.pad_id, dtype=torch.long, device=dev)
    scores = torch.full((P, nb), NEG, device=dev)
    scores[:, ::S] = 0.0  # one live beam per group at first, so a group's beams do not start identical
    f64 = dict(dtype=torch.float64, device=dev)
    h_seq = torch.full((P, G, S, L), ctx.pad_id, dtype=torch.long, device=dev)
    h_score = torch.full((P, G, S), float("-inf"), **f64)
    h_len = torch.zeros((P, G, S), dtype=torch.long, device=dev)
    h_why = torch.full((P, G, S), LENGTH, dtype=torch.long, device=dev)
    count = torch.zeros((P, G), dtype=torch.long, device=dev)
    g_done = torch.zeros((P, G), dtype=torch.bool, device=dev)
    flag = AsyncFlag(dev)

    logits = rows.prefill()
    steps, last = 0, -1
    for t in range(L):
        lp_all = torch.log_softmax(logits, dim=-1).view(P, nb, V)
        if t == 0:
            t_first = ctx.first_token(t0)
        last = step_is_last(t, spec, deadline)
        current = torch.zeros((P, nb), dtype=torch.long, device=dev)
        parents = torch.zeros((P, nb), dtype=torch.long, device=dev)
        new_seq, new_scores = run_seq.clone(), scores.clone()
        for g in range(G):
            sl = slice(g * S, (g + 1) * S)
            lp = lp_all[:, sl]
            if g > 0 and pen > 0.0:
                freq = torch.zeros((P, V), dtype=torch.long, device=dev)
                freq.scatter_add_(1, current[:, : g * S], torch.ones_like(current[:, : g * S]))
                lp = lp - pen * freq[:, None, :]
            n = rows.width + t  # the group's rows of the static token columns: prompt block + t tokens
            state = DecodeState(rows.tokens.view(P, nb, -1)[:, sl, :n].reshape(P * S, n),
                                rows.valid.view(P, nb, -1)[:, sl, :n].reshape(P * S, n), rows.width, t)
            lp = chains[g](lp.reshape(P * S, V), state).view(P, S, V)
            acc = (lp + scores[:, sl, None]).view(P, S * V)
            top_s, top_i = torch.topk(acc, Kg, dim=1, largest=True, sorted=True)
            parent, tok = top_i // V, top_i % V
            cand = gather_beams(run_seq[:, sl], parent)
            cand[:, :, t] = tok
            why = end_codes(ctx, rows.eos, tok, cand, t, -1)
            ends = why >= 0
            done_g = g_done[:, g]

            # finished list: add ending candidates ranked < S; keep the S best (existing entries win ties)
            add = ends & (rank < S) & ~done_g[:, None]
            c = torch.where(add, top_s.double() / float((t + 1) ** lp_pen), float("-inf"))
            merged = torch.cat([h_score[:, g], c], 1)
            order = torch.sort(merged, dim=1, descending=True, stable=True)[1][:, :S]
            h_score[:, g] = merged.gather(1, order)
            h_seq[:, g] = gather_beams(torch.cat([h_seq[:, g], cand], 1), order)
            h_len[:, g] = torch.cat([h_len[:, g], torch.full_like(why, t + 1)], 1).gather(1, order)
            h_why[:, g] = torch.cat([h_why[:, g], why], 1).gather(1, order)
            count[:, g] = torch.clamp(count[:, g] + add.sum(1), max=S)
            worst = h_score[:, g].amin(1)  # read only once the list is full (is_done)

            # the first S candidates that do not end keep running; a done group emits pad with score 0
            keep = torch.sort(ends.to(torch.int8), dim=1, stable=True)[1][:, :S]
            nxt_s = torch.where(done_g[:, None], 0.0, top_s.gather(1, keep))
            nxt_t = torch.where(done_g[:, None], ctx.pad_id, tok.gather(1, keep))
            nxt_p = torch.where(done_g[:, None], 0, parent.gather(1, keep))
            new_scores[:, sl] = nxt_s
            seqs = gather_beams(run_seq[:, sl], nxt_p)
            seqs[:, :, t] = nxt_t
            new_seq[:, sl] = seqs
            current[:, sl] = nxt_t
            parents[:, sl] = nxt_p + g * S
            best = top_s[:, 0].double()
            g_done[:, g] = done_g | _is_done(count[:, g], worst, best, t + 1, S, L, lp_pen, early)
        run_seq, scores = new_seq, new_scores
        if stream is not None:
            stream.step(t, run_seq, h_seq.view(P, nb, L), h_len.view(P, nb), h_score.view(P, nb) > float("-inf"))
        steps = t + 1
        flag.push(g_done.all())
        if last >= 0 or t + 1 == L or flag.ready_and_true():
            break
        logits = rows.advance(current.reshape(-1), (parents + base).reshape(-1), t)
    ctx.decode_done(t_first, steps)
    for ch in chains:
        ch.raise_if_nan()
    return _finalize(ctx, groups, stream, run_seq, scores, steps, last, h_seq, h_score, h_len, h_why, g_done,
                     count, nb, G, S, lp_pen, spec)


def _finalize(ctx, groups, stream, run_seq, scores, steps, last, h_seq, h_score, h_len, h_why, g_done, count,
              nb, G, S, lp_pen, spec) -> Hyps:
    """Running beams of groups not done join their lists (transformers' `finalize`); n best overall."""
    P, L = run_seq.shape[0], run_seq.shape[2]
    open_g = ~g_done  # [P, G]
    run_c = scores.view(P, G, S).double() / float(steps ** lp_pen)
    run_c = torch.where(open_g[:, :, None], run_c, float("-inf"))
    merged = torch.cat([h_score, run_c], 2)  # [P, G, 2S]
    order = torch.sort(merged, dim=2, descending=True, stable=True)[1][:, :, :S]
    sc = merged.gather(2, order)
    why_run = torch.full((P, G, S), last if last >= 0 else LENGTH, dtype=torch.long, device=run_seq.device)
    seq = torch.cat([h_seq, run_seq.view(P, G, S, L)], 2).gather(2, order[..., None].expand(-1, -1, -1, L))
    ln = torch.cat([h_len, torch.full_like(h_len, steps)], 2).gather(2, order)
    wy = torch.cat([h_why, why_run], 2).gather(2, order)
    n = spec.num_return_sequences
    best = torch.sort(sc.view(P, G * S), dim=1, descending=True, stable=True)[1][:, :n]
    sc_l = sc.view(P, -1).gather(1, best).tolist()
    ln_l, wy_l = ln.view(P, -1).gather(1, best).tolist(), wy.view(P, -1).gather(1, best).tolist()
    seq_l = gather_beams(seq.view(P, G * S, L), best).tolist()
    names = reason_names(ctx)
    tokens = [[seq_l[p][k][: ln_l[p][k]] for k in range(n)] for p in range(P)]
    hyps = Hyps(tokens, [[float(x) for x in row] for row in sc_l], [[names[w] for w in row] for row in wy_l])
    if stream is not None:
        hyps.extra = stream.finish([tk[0] for tk in tokens])
    return hyps


def _validate(spec: StrategySpec) -> None:
    check_common(spec, "diverse beam search")
    s = spec.search
    nb, G = s["num_beams"], s.get("num_beam_groups")
    if not isinstance(G, int) or isinstance(G, bool) or G < 1:
        raise ValueError(f"num_beam_groups must be an integer >= 1, got {G!r}")
    if nb % G:
        raise ValueError(f"num_beams ({nb}) must be divisible by num_beam_groups ({G})")
    d = s.get("diversity_penalty")
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0:
        raise ValueError(f"diversity_penalty must be a number >= 0, got {d!r}")
    if spec.params.do_sample:
        raise ValueError("do_sample must be false for diverse beam search")
    if s.get("stream") == "lookahead":
        raise ValueError("stream must be safe for diverse beam search (lookahead follows one leading beam)")


diverse_beam_batch = register_beam_type("diverse_beam", "diverse beam search", diverse_search, _validate)
