"""Beam search (`strategy=beam`): transformers' algorithm, every beam of every prompt in one forward.

Layout: the batch's P distinct prompts x nb beams are rows `[P * nb]` (prompt-major, as transformers lays
them out); K = max(2, 1 + #eos) * nb candidates per prompt and step. With t tokens generated so far:

    logprobs [P*nb, V] = chain(log_softmax(logits))     transforms act on log-probs, as in HF beam search
    acc [P, nb*V]      = logprobs + running scores      -> the top K (score, parent beam, token)
    candidates that end (EOS, stop string, user criterion, the length limit, max_time) and rank among
    the first nb join the finished set with score sum_logprob / (t + 1) ** length_penalty; the best nb
    that do not end keep running; the KV cache rows follow their parents (one index_select per layer)

Each operation mirrors `GenerationMixin._beam_search` of transformers 5.x (same ops in the same order,
so ties break alike, and `early_stopping` True/False/"never" means what it means there). Rows: one
search per distinct prompt; the row with `sample_index` k gets the k-th best hypothesis (best first).
Host reads: one flag per step to leave the loop early, none when a CUDA step is still in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.engine.batch import AsyncFlag, BatchContext, Output, Request, pack_left
from decodebench.decoding.engine.stopping import BASE_REASONS, EOS, LENGTH, TIME
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec
from decodebench.decoding.engine.streaming import BeamStream, as_streamer

NEG = -1.0e9  # transformers' "excluded" score: finite, so excluded sums still order like HF's


# ---------------------------------------------------------------------------------- shared primitives
@dataclass
class Prompts:
    """The batch's distinct prompts, and for each row its prompt and the hypothesis rank it takes."""

    reqs: list[Request]
    of_row: list[int]
    rank: list[int]


def group_prompts(reqs: list[Request]) -> Prompts:
    """Rows sharing (prompt id, ids, settings, seed) are samples of one search; a split group still works."""
    index: dict = {}
    uniq: list[Request] = []
    of_row = []
    for r in reqs:
        key = (r.prompt_id, tuple(r.prompt_ids), r.params, r.seed)
        if key not in index:
            index[key] = len(uniq)
            uniq.append(r)
        of_row.append(index[key])
    return Prompts(uniq, of_row, [r.sample_index for r in reqs])


@dataclass
class Hyps:
    """Per prompt, its hypotheses best first: tokens, scores, finish reasons; per-prompt extras."""

    tokens: list[list[list[int]]]
    scores: list[list[float]]
    reasons: list[list[str]]
    extra: list[dict] = field(default_factory=list)
    row_extra: Optional[list[list[dict]]] = None  # per prompt, per hypothesis


def no_telemetry(ctx: BatchContext, method: str) -> None:
    """Per-step telemetry follows one row's tokens; a hypothesis is stitched from many rows, so refuse it."""
    if ctx.record:
        raise ValueError(f"record (per-step telemetry) is not available for {method}; remove record=[...]")


def outputs_for_rows(groups: Prompts, hyps: Hyps, ctx: BatchContext) -> list[Output]:
    outs = []
    for p, k in zip(groups.of_row, groups.rank):
        if k >= len(hyps.tokens[p]):
            raise ValueError(f"sample_index {k} but only {len(hyps.tokens[p])} hypotheses were kept")
        extra = {"beam_rank": k}
        if k == 0 and hyps.extra:
            extra.update(hyps.extra[p])
        if hyps.row_extra is not None:
            extra.update(hyps.row_extra[p][k])
        outs.append(Output(token_ids=hyps.tokens[p][k], finish_reason=hyps.reasons[p][k],
                           score=hyps.scores[p][k], extra=extra))
    st = as_streamer(ctx.streamer)
    if st is not None:
        st.close(outs)
    return outs


def row_deliver(groups: Prompts, ctx: BatchContext):
    """(deliver, revise) callbacks routing prompt p's stream to its rank-0 rows, or (None, None)."""
    st = as_streamer(ctx.streamer)
    if st is None:
        return None, None
    rows: dict[int, list[int]] = {}
    for i, (p, k) in enumerate(zip(groups.of_row, groups.rank)):
        if k == 0:
            rows.setdefault(p, []).append(i)
    return (lambda p, ids: [st.emit(i, ids) for i in rows.get(p, [])],
            lambda p, keep: [st.withdraw(i, keep) for i in rows.get(p, [])])


class BeamRows:
    """P prompts x nb beams as rows `[P * nb]` of the static state: prompt block, chain, forwards.

    Columns: the padded prompt block `[0, W)`, then one column per step, written in place; a step
    reorders the rows to their parents (one in-place gather of the cache and of the token columns), so
    no tensor grows. The attention window is `[0, W + t]`, the same keys transformers' cache holds.
    """

    def __init__(self, ctx: BatchContext, prompts: list[Request], nb: int):
        self.ctx, self.runner, self.nb = ctx, ctx.runner, nb
        dev = self.runner.device
        self.ids, self.mask = pack_left([r.prompt_ids for r in prompts], ctx.pad_id, dev)  # [P, T0]
        self.P, self.width = self.ids.shape
        self.prompts = [r.prompt_ids for r in prompts]
        n, cap = self.P * nb, self.width + max(1, ctx.max_new_tokens) + 1
        self.kv = self.runner.allocate(n, cap)
        self.kv.col, self.kv.lo = self.width, 0
        self.tokens = torch.full((n, cap), ctx.pad_id, dtype=torch.long, device=dev)
        self.valid = torch.zeros((n, cap), dtype=torch.bool, device=dev)
        self.pos = torch.zeros(n, dtype=torch.long, device=dev)
        self.chain = LogitsChain.from_rows([r.params for r in prompts for _ in range(nb)],
                                           vocab_size=ctx.vocab_size, eos_token_id=ctx.eos, device=dev, tokenizer=ctx.tokenizer)
        self.eos = torch.tensor(ctx.eos, dtype=torch.long, device=dev)  # built once, read every step

    def prefill(self) -> torch.Tensor:
        """`[P*nb, V]` first logits; each prompt's forward once, its cache copied to its beams' rows.

        The output layer runs on the repeated last hidden state, not once per prompt: CPU GEMM results
        depend on the row count, and transformers prefills all P*nb rows, so this keeps its bits.
        Checked against the per-prompt logits; a model whose logits are not `lm_head(hidden)` (logit
        soft-capping, scaling) falls back to the repeated logits.
        """
        runner, nb = self.runner, self.nb
        want_hidden = runner.hidden_states
        runner.hidden_states = True
        try:
            slots = torch.arange(self.P * nb, device=runner.device)
            prompts = [p for p in self.prompts for _ in range(nb)]
            logits, hidden, lens = runner.prefill(slots, prompts, self.ctx.pad_id, self.valid, self.tokens)
        finally:
            runner.hidden_states = want_hidden
        self.pos.copy_(lens)
        head = runner.model.get_output_embeddings()
        with torch.inference_mode():
            rep = head(hidden[:, -1:, :])[:, -1, :].to(torch.float32) if head else None
        tol = 1e-3 if hidden.dtype == torch.float32 else 5e-2  # catches soft-capping/scaling, not rounding
        if rep is not None and torch.allclose(rep, logits, rtol=tol, atol=tol):  # one sync per batch
            return rep
        return logits

    def state(self, gen: torch.Tensor, t: int) -> DecodeState:
        """The chain's view: prompt block + the `t` generated tokens (`gen` holds the same ids)."""
        return DecodeState(self.tokens[:, : self.width + t], self.valid[:, : self.width + t], self.width, t)

    def logprobs(self, logits: torch.Tensor, gen: torch.Tensor, t: int) -> torch.Tensor:
        return self.chain(torch.log_softmax(logits, dim=-1), self.state(gen, t))

    def advance(self, tokens: torch.Tensor, parents: torch.Tensor, t: int) -> torch.Tensor:
        """Rows follow `parents` `[P*nb]` (flat rows), then feed `tokens` `[P*nb]`; next logits."""
        n, col = tokens.shape[0], self.kv.col
        self.kv.select_slots(parents, n)
        self.tokens[:, self.width:col] = self.tokens[parents, self.width:col]  # the prompt block is shared
        self.tokens[:, col] = tokens
        self.valid[:, col] = True
        logits, _ = self.runner.decode(tokens[:, None], self.pos[:, None], self.valid)
        self.pos += 1
        self.kv.col += 1
        return logits[:, -1]


def gather_beams(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`x` `[P, M, ...]`, `idx` `[P, J]` -> `[P, J, ...]` (transformers' `_gather_beams`)."""
    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


def end_codes(ctx: BatchContext, eos: torch.Tensor, tok: torch.Tensor, cand: torch.Tensor, t: int,
              last: int) -> torch.Tensor:
    """`[P, K]` finish_reason code of candidates whose token ends them, else -1. EOS wins over rules.

    `last`: LENGTH or TIME when this step is the final one for everybody, else -1.
    """
    P, K = tok.shape
    why = torch.full((P, K), last, dtype=torch.long, device=tok.device)
    if ctx.stop is not None:
        code = ctx.stop.check(cand.reshape(P * K, -1), t + 1).view(P, K)
        why = torch.where(code >= 0, code, why)
    if eos.numel():
        why = torch.where(torch.isin(tok, eos), EOS, why)
    return why


def step_is_last(t: int, spec: StrategySpec, deadline: Optional[float]) -> int:
    if t == spec.max_new_tokens - 1:
        return LENGTH
    if deadline is not None and time.perf_counter() > deadline:
        return TIME  # transformers' MaxTimeCriteria: every candidate of this step ends
    return -1


def make_stream(spec: StrategySpec, ctx: BatchContext, groups: Prompts, P: int, rule_default="safe"):
    """The emission tracker when streaming is asked for (strategy.stream, or a streamer attached)."""
    rule = spec.search.get("stream") or (rule_default if ctx.streamer is not None else None)
    if rule is None:
        return None
    deliver, revise = row_deliver(groups, ctx)
    return BeamStream(rule, int(spec.search.get("lookahead") or 1), P, spec.max_new_tokens,
                      ctx.runner.device, ctx.pad_id, deliver, revise, t0=time.perf_counter())


def reason_names(ctx: BatchContext) -> tuple[str, ...]:
    return ctx.stop.reasons if ctx.stop is not None else BASE_REASONS


# ---------------------------------------------------------------------------------------- the method
def beam_search(ctx: BatchContext, groups: Prompts, spec: StrategySpec) -> Hyps:
    s = spec.search
    nb, lp_pen, early = int(s["num_beams"]), float(s["length_penalty"]), s["early_stopping"]
    P, L, V, dev = len(groups.reqs), spec.max_new_tokens, ctx.vocab_size, ctx.runner.device
    t0 = time.perf_counter()
    deadline = t0 + spec.max_time if spec.max_time else None
    K = max(2, 1 + len(ctx.eos)) * nb
    rows = BeamRows(ctx, groups.reqs, nb)
    stream = make_stream(spec, ctx, groups, P)
    top_mask = torch.arange(K, device=dev) < nb  # only the first nb candidates may finish (HF)
    offsets = torch.arange(P, device=dev)[:, None] * nb

    run_seq = torch.full((P, nb, L), ctx.pad_id, dtype=torch.long, device=dev)
    run_score = torch.zeros((P, nb), device=dev)
    run_score[:, 1:] = NEG  # only beam 0 expands at first: the beams start identical
    fin_seq, fin_score = run_seq.clone(), torch.full((P, nb), NEG, device=dev)
    fin_len = torch.zeros((P, nb), dtype=torch.long, device=dev)
    fin_why = torch.full((P, nb), LENGTH, dtype=torch.long, device=dev)
    fin_on = torch.zeros((P, nb), dtype=torch.bool, device=dev)
    open_ = torch.ones((P, 1), dtype=torch.bool, device=dev)  # HF's is_early_stop_heuristic_unsatisfied
    done = AsyncFlag(dev)

    logits = rows.prefill()
    steps = 0
    for t in range(L):
        lp = rows.logprobs(logits, run_seq.view(P * nb, L), t)
        acc = (lp.view(P, nb, V) + run_score[:, :, None]).view(P, nb * V)
        top_lp, top_idx = torch.topk(acc, K)
        parent, tok = top_idx // V, top_idx % V
        cand = gather_beams(run_seq, parent)  # [P, K, L]
        cand[:, :, t] = tok
        if t == 0:
            t_first = ctx.first_token(t0)
        last = step_is_last(t, spec, deadline)
        why = end_codes(ctx, rows.eos, tok, cand, t, last)
        hits = why >= 0

        # the best nb that do not end keep running
        run_lp = top_lp + hits.to(torch.float32) * NEG
        nxt = torch.topk(run_lp, k=nb)[1]
        run_seq, run_score = gather_beams(cand, nxt), gather_beams(run_lp, nxt)
        run_parent = gather_beams(parent, nxt)

        # candidates that end, among the first nb, compete with the finished set (HF's order of ops)
        did = hits & top_mask[None, :]
        c = top_lp / ((t + 1) ** lp_pen)
        full = fin_on.all(-1, keepdim=True) & (early is True)
        c += full.to(torch.float32) * NEG
        c += (~open_).to(torch.float32) * NEG
        c += (~did) * NEG
        keep = torch.topk(torch.cat((fin_score, c), 1), k=nb)[1]
        fin_seq = gather_beams(torch.cat((fin_seq, cand), 1), keep)
        fin_score = gather_beams(torch.cat((fin_score, c), 1), keep)
        fin_len = gather_beams(torch.cat((fin_len, torch.full_like(why, t + 1)), 1), keep)
        fin_why = gather_beams(torch.cat((fin_why, why), 1), keep)
        fin_on = gather_beams(torch.cat((fin_on, did), 1), keep)

        n = t + 1
        best_len = L if (early == "never" and lp_pen > 0.0) else n
        best_possible = run_score[:, :1] / (best_len ** lp_pen)
        worst = torch.where(fin_on, torch.min(fin_score, dim=1, keepdim=True)[0], NEG)
        open_ = open_ & torch.any(best_possible > worst, dim=-1, keepdim=True)
        if stream is not None:
            stream.step(t, run_seq, fin_seq, fin_len, fin_on, leader_kept=run_parent[:, 0] == 0)
        steps = n
        more = open_.any() & ~(fin_on.all() & (early is True)) & ~hits.all()
        done.push(~more)
        if last >= 0 or done.ready_and_true():
            break
        logits = rows.advance(run_seq[:, :, t].reshape(-1), (run_parent + offsets).reshape(-1), t)
    ctx.decode_done(t_first, steps)

    names = reason_names(ctx)
    seqs, scores, lens, whys = fin_seq.tolist(), fin_score.tolist(), fin_len.tolist(), fin_why.tolist()
    tokens = [[seqs[p][k][: lens[p][k]] for k in range(nb)] for p in range(P)]
    hyps = Hyps(tokens, scores, [[names[w] for w in row] for row in whys])
    if stream is not None:
        hyps.extra = stream.finish([tk[0] for tk in tokens])
    rows.chain.raise_if_nan()
    return hyps


def check_common(spec: StrategySpec, method: str) -> None:
    """Range checks shared by the beam-type methods (one line each, naming the field)."""
    s = spec.search
    nb = s.get("num_beams")
    if not isinstance(nb, int) or isinstance(nb, bool) or nb < 1:
        raise ValueError(f"num_beams must be >= 1, got {nb!r}")
    if spec.num_return_sequences > nb:
        raise ValueError(f"num_return_sequences must be <= num_beams ({nb}) for {method}, "
                         f"got {spec.num_return_sequences}")
    if s.get("early_stopping") not in (True, False, "never"):
        raise ValueError(f"early_stopping must be true, false or never, got {s.get('early_stopping')!r}")
    lp = s.get("length_penalty")
    if isinstance(lp, bool) or not isinstance(lp, (int, float)):
        raise ValueError(f"length_penalty must be a number, got {lp!r}")
    if s.get("stream") not in (None, "safe", "lookahead"):
        raise ValueError(f"stream must be safe or lookahead (or unset), got {s.get('stream')!r}")
    la = s.get("lookahead")
    if not isinstance(la, int) or isinstance(la, bool) or la < 1:
        raise ValueError(f"lookahead must be an integer >= 1, got {la!r}")


def _validate(spec: StrategySpec) -> None:
    check_common(spec, "beam search")
    if spec.params.do_sample:
        raise ValueError("do_sample must be false for beam search; use strategy=stochastic_beam for sampled beams")
    if int(spec.search.get("num_beam_groups") or 1) != 1:
        raise ValueError("num_beam_groups must be 1 for beam search; use strategy=diverse_beam for groups")


def register_beam_type(name: str, label: str, search, validate):
    """Register a beam-type method: `search(ctx, groups, spec) -> Hyps` over whole prompts, n best per
    prompt handed to its rows by sample_index. No per-step telemetry (a hypothesis is stitched from rows)."""

    @torch.inference_mode()
    def run(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
        no_telemetry(ctx, label)
        groups = group_prompts(reqs)
        return outputs_for_rows(groups, search(ctx, groups, spec), ctx)

    return METHODS.register(name, SearchMethod(name=name, run=run, validate=validate, supports_record=False))


beam_batch = register_beam_type("beam", "beam search", beam_search, _validate)
