"""Model metrics from the scoring model's log-probabilities of each continuation given its prompt:
perplexity, and coherence as Su & Collier (2023) define it. The model and tokenizer are loaded by the
caller; nothing here loads weights.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .inputs import Inputs
from .spec import Scorer, at_least, choice, ratio, reference_variant, register


def model_device(model, device=None) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def context_limit(model, max_length: int | None) -> int | None:
    if max_length:
        return max_length
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def encode_pairs(inputs: Inputs, bos: str) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per text. The continuation is the engine's token ids when the
    record has them, else the text tokenized without special tokens. The context is the record's prompt
    token ids, else the prompt tokenized as the tokenizer does by default (its BOS included, if it adds
    one). bos="always" makes the context start with the BOS token (Su & Collier prepend it); an empty
    context gets the BOS token in either mode when the tokenizer has one."""
    tok = inputs.tokenizer
    bos_id = getattr(tok, "bos_token_id", None)
    pairs = []
    for text, cont, prompt, ctx in zip(inputs.texts, inputs.token_ids, inputs.prompts, inputs.prompt_token_ids):
        if cont is None:
            cont = tok(text, add_special_tokens=False)["input_ids"]
        if ctx is None:
            ctx = tok(prompt)["input_ids"] if prompt else []
        ctx, cont = list(ctx), list(cont)
        if bos_id is not None and (not ctx or (bos == "always" and ctx[0] != bos_id)):
            ctx = [bos_id] + ctx
        pairs.append((ctx, cont))
    return pairs


@torch.no_grad()
def continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], *, batch_size: int,
                          max_length: int | None = None, device=None, progress: bool = False,
                          desc: str = "log-probs") -> list[np.ndarray]:
    """log p(continuation token | everything before it), one float64 array per pair.

    Batched with right padding, an attention mask and per-row position ids; rows sorted by length so a
    batch pads little. A context longer than the model allows loses its earliest tokens; a continuation
    that does not fit is an error rather than a silently shorter score. A continuation's first token is
    scored only when there is a context token before it.
    """
    limit = context_limit(model, max_length)
    device = model_device(model, device)
    rows = []
    for i, (ctx, cont) in enumerate(pairs):
        if limit is not None and len(cont) + 1 > limit and cont:
            raise ValueError(f"continuation {i} has {len(cont)} tokens, more than the scoring model's "
                             f"context of {limit}; set the scorer's max_length or shorten the generations")
        if limit is not None and len(ctx) + len(cont) > limit:
            ctx = ctx[len(ctx) + len(cont) - limit:]
        rows.append((i, ctx + cont, len(ctx)))
    out: list[np.ndarray] = [np.zeros(0) for _ in pairs]
    scored = sorted((r for r in rows if len(r[1]) >= 2 and len(r[1]) > r[2]), key=lambda r: -len(r[1]))
    batches = [scored[k:k + batch_size] for k in range(0, len(scored), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        width = max(len(ids) for _, ids, _ in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, (_, ids, _) in enumerate(batch):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            mask[r, :len(ids)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), use_cache=False).logits  # no KV cache to build
        targets = input_ids[:, 1:].to(device)
        logp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
        logp = logp.double().cpu().numpy()
        for r, (i, ids, ctx_len) in enumerate(batch):
            # position t predicts token t + 1; the continuation starts at ctx_len (first scorable: 1)
            start = max(ctx_len, 1)
            out[i] = logp[r, start - 1:len(ids) - 1]
    return out


def recorded_rows(inputs: Inputs, pairs, max_length: int | None) -> dict[int, np.ndarray]:
    """The texts whose log-probs generation already recorded, for exactly this pair: the scoring model is
    the generating one (else `gen_logprobs` is None), the context is the record's prompt unchanged (no BOS
    added, nothing cut) and every continuation token has its value."""
    if not inputs.gen_logprobs:
        return {}
    limit = context_limit(inputs.model, max_length)
    out = {}
    for i, ((ctx, cont), lps, prompt) in enumerate(zip(pairs, inputs.gen_logprobs, inputs.prompt_token_ids)):
        if lps is None or prompt is None or not ctx or ctx != list(prompt) or len(lps) != len(cont):
            continue
        if limit is not None and len(ctx) + len(cont) > limit:
            continue
        out[i] = np.asarray(lps, dtype=np.float64)
    return out


def cached_logprobs(inputs: Inputs, bos: str, batch_size: int, max_length: int | None) -> list[np.ndarray]:
    """Perplexity and coherence with the same settings share one pass over the model; texts whose
    log-probs were recorded during generation need none."""
    key = ("logprobs", bos, max_length)
    if key not in inputs.cache:
        pairs = encode_pairs(inputs, bos)
        known = recorded_rows(inputs, pairs, max_length)
        rest = [i for i in range(len(pairs)) if i not in known]
        computed = continuation_logprobs(
            inputs.model, [pairs[i] for i in rest], batch_size=batch_size, max_length=max_length,
            device=inputs.device, progress=inputs.progress, desc=f"log-probs {inputs.label}".strip()) if rest else []
        out = dict(known)
        out.update(zip(rest, computed))
        inputs.cache[key] = [out[i] for i in range(len(pairs))]
    return inputs.cache[key]


def perplexity_fn(inputs: Inputs, batch_size: int, max_length: int, bos: str, **_) -> dict[str, np.ndarray]:
    logps = cached_logprobs(inputs, bos, batch_size, max_length or None)
    return {"nll": np.array([-lp.sum() for lp in logps]), "tokens": np.array([float(lp.size) for lp in logps])}


def perplexity_aggregate(stats: Mapping[str, np.ndarray], **_) -> dict[str, np.ndarray]:
    """exp(total NLL of the continuation tokens / their number), pooled over texts (token-weighted)."""
    return {"perplexity": np.exp(ratio(stats["nll"], stats["tokens"]))}


def coherence_fn(inputs: Inputs, batch_size: int, max_length: int, bos: str, **_) -> dict[str, np.ndarray]:
    """Su & Collier (2023) coherence: per text the mean log-probability of the continuation's tokens
    given the prefix under the scoring model; then the mean over texts. Empty continuations are left
    out, as in their `compute_coherence.py`."""
    logps = cached_logprobs(inputs, bos, batch_size, max_length or None)
    return {"coherence": np.array([lp.mean() if lp.size else np.nan for lp in logps])}


def _check_lm(name: str):
    def check(options: Mapping) -> None:
        at_least(options, "batch_size", 1, name)
        at_least(options, "max_length", 0, name)
        choice(options, "bos", ("tokenizer", "always"), name)
    return check


# max_length 0: the model's own context length; model "": the model that generated (else a name the
# caller loads and passes to `ScorerPlan.score(models=...)`)
LM_OPTIONS = {"batch_size": 8, "max_length": 0, "model": ""}

PERPLEXITY = register(Scorer(
    name="perplexity", fn=perplexity_fn, aggregate=perplexity_aggregate, per_item=True,
    needs=frozenset({"texts", "model"}), metrics={"perplexity": None},
    options={**LM_OPTIONS, "bos": "tokenizer"}, check=_check_lm("perplexity"),
    doc="exp(mean NLL of the continuation tokens given the prompt) under the scoring model",
))
register(reference_variant(PERPLEXITY))
register(Scorer(
    name="coherence", fn=coherence_fn, per_item=True, needs=frozenset({"texts", "prompts", "model"}),
    metrics={"coherence": True}, options={**LM_OPTIONS, "bos": "always"}, check=_check_lm("coherence"),
    doc="mean log-probability of the continuation given the prefix (Su & Collier 2023)",
))
