"""Speculative (assisted) decoding (`strategy=speculative`): Leviathan et al. 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
Speculative Sampling". Batched, with per-row acceptance, and exact: the output distribution is the
target's, with the same transforms applied to the target's and the draft's logits.

Drafting length: `num_assistant_tokens` = k per round, fixed, or with `num_assistant_tokens_schedule=heuristic`
transformers' schedule on the batch (k + 2 after a round in which every live row accepted every draft,
else k - 1, at least 1, at most `k_cap`).

Draft sources (`assistant`):
    {model: <name>}       any model sharing the target's vocabulary, with its own KV state in step with the target's
    {early_exit: N}       the target's first N layers and its LM head (after the final norm), as transformers'
                          `assistant_early_exit`: the same weights, no second download
    {prompt_lookup: N}    the last n-gram (n = N down to 1) matched earlier in the prompt or the output so far;
                          the tokens that followed it are the draft (Saxena 2023), a point-mass proposal

A round, for every row at once: the pending token x0 and `num_assistant_tokens` = k draft tokens are k + 1
causal queries of ONE target forward at columns [col, col + k + 1). Row b accepts its first a_b drafts
(greedy: while the draft is the target's argmax; sampled: draft d with probability min(1, p(d) / q(d))),
then takes one more token from the target: the residual norm(max(p - q, 0)) at its first rejection, or p
after its last draft. Its rejected columns are marked invalid (masked from then on), `col` moves by k + 1
for every row, each row's positions by its own a_b + 1. So greedy speculative decoding is greedy decoding
token for token, and sampled rows draw from the target's processed distribution.

Noise is a function of (seed, prompt, sample, position): separate streams for the draft's samples, the
acceptance tests and the target's own draws. Finished rows go through the shared component
(`row_tracker.RowTracker.push_many`): EOS, the length limit, stop strings and user criteria end a row at
the exact token (a round's later tokens are dropped), and `max_time` ends the batch after the round in
which it passes. Streaming is not served by this method.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from decodebench.decoding.transforms.chain import DecodeState, LogitsChain
from decodebench.decoding.engine.kvcache import Runtime, SlotKV
from decodebench.decoding.engine.layer_runtime import PairedKV, TiedKV, load_second_model, num_layers
from decodebench.decoding.engine.row_tracker import RowTracker
from decodebench.decoding.engine.batch import BatchContext, Output, Request, request_keys
from decodebench.decoding.sampling import _bits, _uniform, sample
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec

# noise streams: a row's key XOR one of these (the target's own draws use the key itself)
DRAFT_STREAM, ACCEPT_STREAM = 0x5EED_D4AF, 0x5EED_ACC7


def verify(p: Tensor, q: Tensor, drafts: Tensor, u: Tensor, greedy: Tensor) -> tuple[Tensor, Tensor]:
    """One round's acceptance. p `[B, k+1, V]` target probabilities (processed), q `[B, k, V]` the draft's,
    drafts `[B, k]`, u `[B, k]` uniforms in (0, 1), greedy `[B]` bool.

    Returns (accepted drafts `[B]` in [0, k], the distribution of the row's next token `[B, V]`: the
    residual norm(max(p_a - q_a, 0)) after a rejection at a < k, else p_k; greedy rows: one-hot argmax p_a).
    """
    B, k1, V = p.shape
    k = k1 - 1
    pd = p[:, :k].gather(-1, drafts[..., None])[..., 0]
    qd = q.gather(-1, drafts[..., None])[..., 0]
    ok = torch.where(greedy[:, None], drafts == p[:, :k].argmax(-1), u * qd < pd)  # u < p/q, no division
    acc = ok.long().cumprod(dim=-1).sum(dim=-1)
    pa = p.gather(1, acc.view(B, 1, 1).expand(B, 1, V))[:, 0]
    q_pad = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)  # after the last draft there is no q
    qa = q_pad.gather(1, acc.view(B, 1, 1).expand(B, 1, V))[:, 0]
    resid = (pa - qa).clamp(min=0)
    total = resid.sum(-1, keepdim=True)
    resid = torch.where(total > 0, resid / total.clamp(min=1e-30), pa)  # p == q exactly: never rejected
    one_hot = torch.zeros_like(pa).scatter_(1, pa.argmax(-1, keepdim=True), 1.0)
    return acc, torch.where(greedy[:, None], one_hot, resid)


def uniforms(keys: Tensor, step: Tensor) -> Tensor:
    """`[B]` uniforms in (0, 1) from the acceptance stream at per-row positions `step` `[B]`."""
    zero = torch.zeros((keys.shape[0], 1), dtype=torch.long, device=keys.device)
    return _uniform(_bits(keys ^ ACCEPT_STREAM, step, 1, zero))[:, 0]


def truncated(model, n: int):
    """The target's first n layers, final norm and LM head as a model of its own, sharing the weights."""
    import copy

    inner = copy.copy(model.model)
    inner._modules = dict(model.model._modules)
    inner._modules["layers"] = nn.ModuleList(list(model.model.layers)[:n])
    cfg = copy.copy(model.config)
    cfg.num_hidden_layers = n
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types)[:n]
    inner.config = cfg
    outer = copy.copy(model)
    outer._modules = dict(model._modules)
    outer._modules["model"] = inner
    outer.config = cfg
    return outer


class SpecRuntime(Runtime):
    """The target's Runtime plus a draft model whose KV state follows the target's slots and columns."""

    def __init__(self, model, draft=None, **kw):
        kw.pop("hidden_states", None)
        super().__init__(model, **kw)
        self.draft = draft
        self.draft_passes = 0
        self.draft_logits = None

    def allocate(self, slots: int, capacity: int) -> SlotKV:
        self.kv = None
        kv = PairedKV(num_layers(self.model), slots, capacity, self.device, self.static_shapes)
        if self.draft is not None:
            kv.partner = TiedKV(kv, num_layers(self.draft))
        self.kv = kv
        return kv

    def _forward(self, ids, pos, mask, keep=1):
        logits, hidden = super()._forward(ids, pos, mask, keep)
        if self.draft is not None and self.kv.mode == "prefill":  # the draft reads the prompt too
            out = self.draft(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.kv.partner,
                             use_cache=True, logits_to_keep=1)
            self.draft_logits = out.logits[:, -1].to(torch.float32)
            self.tokens_processed += int(ids.numel())
        return logits, hidden

    @torch.inference_mode()
    def draft_step(self, tok: Tensor, pos: Tensor, valid: Tensor, col: int) -> Tensor:
        """The draft's logits `[B, V]` for `tok` `[B]` written at column `col` (its own state only)."""
        kv, saved = self.kv, self.kv.col
        kv.col = col
        try:
            mask = self.mask4d(valid[:, kv.lo:col + 1], 1, causal_tail=True)
            out = self.draft(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                             cache=kv.partner, use_cache=True, logits_to_keep=1)
        finally:
            kv.col = saved
        self.draft_passes += 1
        self.tokens_processed += int(tok.numel())
        return out.logits[:, -1].to(torch.float32)


def lookup_drafts(rows: list[list[int]], n: int, k: int, pad: int) -> list[list[int]]:
    """Prompt lookup: per row, the k tokens after the latest earlier match of its last n-gram (n down to 1);
    pad tokens when nothing matches (a point-mass proposal is exact whatever it proposes)."""
    out = []
    for ids in rows:
        found: list[int] = []
        for size in range(min(n, len(ids) - 1), 0, -1):
            tail = ids[-size:]
            for s in range(len(ids) - size - 1, -1, -1):
                if ids[s:s + size] == tail:
                    found = ids[s + size:s + size + k]
                    break
            if found:
                break
        out.append((found + [pad] * k)[:k])
    return out


@torch.inference_mode()
def speculative_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    rt: SpecRuntime = ctx.runner
    dev, t0 = rt.device, time.perf_counter()
    k, L, B = int(spec.search["num_assistant_tokens"]), spec.max_new_tokens, len(reqs)
    heuristic = spec.search.get("num_assistant_tokens_schedule") == "heuristic"
    k_max = k_cap(k) if heuristic else k
    lookup = spec.search["assistant"].get("prompt_lookup")
    width = max(len(r.prompt_ids) for r in reqs)
    cap = width + (L + 1) * (k_max + 1) + 1  # each round uses k + 1 columns and yields >= 1 token
    kv = rt.allocate(B, cap)
    kv.col, kv.lo = width, 0
    tokens = torch.full((B, cap), ctx.pad_id, dtype=torch.long, device=dev)
    valid = torch.zeros((B, cap), dtype=torch.bool, device=dev)
    chain = LogitsChain.from_rows([r.params for r in reqs], vocab_size=ctx.vocab_size, eos_token_id=ctx.eos, device=dev)
    greedy = ~chain.do_sample
    keys = request_keys(reqs, dev)
    calls = [0]

    def proc(x: Tensor, c: int, n: Tensor) -> Tensor:
        """The chain on logits whose history is tokens[:, :c]; n: tokens generated before this one."""
        calls[0] += 1  # a fresh step key: the count tables are rebuilt from the history (always right)
        return chain(x, DecodeState(tokens[:, :c], valid[:, :c], width, calls[0], row_step=n))

    logits, _, pos = rt.prefill(torch.arange(B, device=dev), [r.prompt_ids for r in reqs], ctx.pad_id, valid, tokens)
    d_logits = rt.draft_logits
    n = torch.zeros(B, dtype=torch.long, device=dev)
    x0 = sample(proc(logits, width, n), keys, n, chain.sample_mode)
    rows = RowTracker(B, spec, ctx, t0)  # finished rows: EOS, the limit, stop strings, criteria, max_time
    proposed = accepted = rounds = 0
    all_done = rows.push_many(x0[:, None], torch.ones_like(x0))
    rows.t_first = ctx.first_token(t0)
    n += 1
    while not all_done:
        col = kv.col
        tokens[:, col], valid[:, col] = x0, True
        q = torch.zeros((B, k, ctx.vocab_size), device=dev)
        if lookup is not None:
            got = [o[:m] for o, m in zip(rows.out.tolist(), rows.lengths.tolist())]
            hist = [reqs[b].prompt_ids + got[b] for b in range(B)]  # it ends with x0 while the row runs
            drafts = torch.tensor(lookup_drafts(hist, int(lookup), k, ctx.pad_id), device=dev)
            q.scatter_(2, drafts[..., None], 1.0)
            tokens[:, col + 1:col + k + 1], valid[:, col + 1:col + k + 1] = drafts, True
        else:
            cur, ds = x0, []
            for i in range(k):
                dl = rt.draft_step(cur, pos + i, valid, col + i)
                qi = proc(dl, col + i + 1, n + i)
                cur = sample(qi, keys ^ DRAFT_STREAM, n + i, chain.sample_mode)
                q[:, i] = qi.softmax(-1)
                tokens[:, col + i + 1], valid[:, col + i + 1] = cur, True
                ds.append(cur)
            rt.draft_step(cur, pos + k, valid, col + k)  # the draft's state gets its last token too
            drafts = torch.stack(ds, dim=1)
        steps = pos[:, None] + torch.arange(k + 1, device=dev)
        tl, _ = rt.decode(tokens[:, col:col + k + 1], steps, valid)
        p = torch.stack([proc(tl[:, i], col + i + 1, n + i).softmax(-1) for i in range(k + 1)], dim=1)
        u = torch.stack([uniforms(keys, n + i) for i in range(k)], dim=1)
        acc, nxt_dist = verify(p, q, drafts, u, greedy)
        nxt = sample(nxt_dist.log(), keys, n + acc, chain.sample_mode)
        # rejected drafts leave the context for good; every row moves k + 1 columns
        j = torch.arange(k, device=dev)[None, :]
        valid[:, col + 1:col + k + 1] &= j < acc[:, None]
        pos += acc + 1
        n += acc + 1
        kv.col = col + k + 1
        live = (~rows.finished).tolist()
        a_host = acc.tolist()
        proposed += k * sum(live)
        accepted += sum(a for a, lv in zip(a_host, live) if lv)
        rounds += sum(live)
        seq = torch.cat([drafts, nxt[:, None]], dim=1).scatter_(1, acc[:, None], nxt[:, None])  # a_b drafts, then nxt
        all_done = rows.push_many(seq, acc + 1)
        x0 = nxt
        if heuristic:  # transformers' schedule, on the batch: longer while every live row takes every draft
            all_in = all(a == k for a, lv in zip(a_host, live) if lv)
            k = min(k + 2, k_max) if all_in else max(k - 1, 1)
    chain.raise_if_nan()
    rows.steps = rounds
    outs = rows.outputs(None)  # (records the decode time)
    ex = ctx.stats.extra
    for key, v in (("draft_proposed", proposed), ("draft_accepted", accepted), ("verify_rows", rounds),
                   ("draft_forward_passes", rt.draft_passes)):
        ex[key] = ex.get(key, 0) + v
    rt.draft_passes = 0
    return outs


def k_cap(k: int) -> int:
    """The heuristic schedule's ceiling (transformers has none at batch size 1; a batch's static state needs
    one): four times the starting length, at least 16."""
    return max(4 * k, 16)


def speculative_metrics(extra: dict) -> dict:
    """acceptance_rate (accepted / proposed drafts) and mean_accepted_tokens (per row and round)."""
    if not extra.get("verify_rows"):
        return {}
    return {"acceptance_rate": extra["draft_accepted"] / max(extra["draft_proposed"], 1),
            "mean_accepted_tokens": extra["draft_accepted"] / extra["verify_rows"]}


def _draft(spec: StrategySpec, model):
    """The draft model (a second model with its vocabulary checked, or the truncated target), or None."""
    a = spec.search["assistant"]
    if a.get("model") is not None:
        return load_second_model(str(a["model"]), model, "assistant.model")
    if a.get("early_exit") is not None:
        n, layers = int(a["early_exit"]), num_layers(model)
        if n >= layers:
            raise ValueError(f"assistant.early_exit must be < the target's {layers} layers, got {n}")
        return truncated(model, n)
    return None


def make_runtime(model, spec: StrategySpec, **kw) -> SpecRuntime:
    return SpecRuntime(model, _draft(spec, model), **kw)


_SOURCES = ("model", "early_exit", "prompt_lookup")


def _validate(spec: StrategySpec) -> None:
    a, s = spec.search.get("assistant") or {}, spec.search
    unknown = [key for key in a if key not in _SOURCES]
    if unknown:
        raise ValueError(f"assistant.{unknown[0]} is not a draft source; choose one of model, early_exit, "
                         "prompt_lookup")
    given = [key for key in _SOURCES if a.get(key) is not None]
    if len(given) != 1:
        raise ValueError("assistant must name exactly one draft source: assistant.model=<model>, "
                         f"assistant.early_exit=N or assistant.prompt_lookup=N (got {given or 'none'})")
    for key in ("early_exit", "prompt_lookup"):
        v = a.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"assistant.{key} must be an integer >= 1, got {v!r}")
    k = s.get("num_assistant_tokens")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"num_assistant_tokens must be an integer >= 1 (drafts per round), got {k!r}")
    if s.get("num_assistant_tokens_schedule") not in ("constant", "heuristic"):
        raise ValueError("num_assistant_tokens_schedule must be constant or heuristic, got "
                         f"{s.get('num_assistant_tokens_schedule')!r}")


METHODS.register("speculative", SearchMethod(name="speculative", run=speculative_batch, validate=_validate,
                                             supports_record=False, runtime=make_runtime,
                                             check_model=lambda spec, model: _draft(spec, model) and None))
