"""CoT-decoding (`strategy=cot_decoding`): Wang & Zhou 2024, "Chain-of-Thought Reasoning Without Prompting",
as optillm's `cot_decoding.py` (`cot_decode`) computes it.

Per prompt: the `cot_k` (optillm's `k`) most likely first tokens under the raw logits (no transform) start
`cot_k` branches; each continues greedily (the strategy's processors apply: repetition_penalty,
no_repeat_ngram_size, ...). A branch's confidence is the mean, over its continuation steps, of the margin
p1 - p2 between the two most likely tokens of the step's processed distribution; the branch with the
largest confidence is the output (ties: the earlier branch, i.e. the likelier first token). With
`aggregate_paths=true` the confidences of branches with the same decoded text are summed and the text with
the largest sum wins (its first branch is the output).

Where optillm's code and the paper differ, this follows the code:
- the paper averages the margin over the answer's tokens; optillm (and so this) over every step of the
  continuation after the branch token, whatever the token chosen there;
- the branch token itself has no margin (optillm pairs the t-th score with the t-th answer token, and the
  scores start after the branch token).
Two choices of decodebench's own: `max_new_tokens` counts the branch token (optillm generates
`max_new_tokens` more after it), and a branch whose first token is EOS ends there with confidence 0
(optillm's empty-path value) instead of generating past the EOS.

Each output's record carries `cot_branch` (which branch won), `cot_first_tokens` and `cot_confidences`.
"""

from __future__ import annotations

import dataclasses

import torch

from decodebench.decoding.search.row_loop import run_rows
from decodebench.decoding.engine.batch import BatchContext, Output, Request
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec


def top2_margin(processed: torch.Tensor) -> torch.Tensor:
    """`[B]` p1 - p2 of `softmax(processed)` `[B, V]` (optillm's per-step Δ)."""
    top = processed.softmax(dim=-1).topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def choose_branch(confidences: list[float], texts: list[str], aggregate: bool) -> int:
    """Index of the winning branch: the largest confidence (optillm's `max`, the first on ties), or with
    `aggregate` the first branch of the text whose summed confidence is largest."""
    if not aggregate:
        return max(range(len(confidences)), key=lambda i: (confidences[i], -i))
    sums: dict[str, float] = {}
    for t, c in zip(texts, confidences):
        sums[t] = sums.get(t, 0.0) + c
    best = max(sums, key=sums.get)  # dict order: the text seen first wins ties, as optillm
    return texts.index(best)


@torch.inference_mode()
def cot_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    k, dev = int(spec.search["cot_k"]), ctx.runner.device
    rows = [dataclasses.replace(r, sample_index=j) for r in reqs for j in range(k)]
    n = len(rows)
    first = torch.zeros(n, dtype=torch.long, device=dev)
    total = torch.zeros(n, dtype=torch.float64, device=dev)
    count = torch.zeros(n, dtype=torch.long, device=dev)

    def before(step, raw, processed, live):
        if step == 0:  # branch on the raw first-step logits, as optillm's topk(first_token_logits, k)
            first.copy_(raw.topk(k, dim=-1).indices.view(len(reqs), k, k)[:, 0].reshape(-1))
        else:
            total.add_(torch.where(live, top2_margin(processed).double(), 0.0))
            count.add_(live.long())
        return processed

    outs = run_rows(rows, spec, ctx, first=first, before=before)
    conf = torch.where(count > 0, total / count.clamp(min=1), 0.0).tolist()
    results = []
    for b in range(len(reqs)):
        branch = outs[b * k:(b + 1) * k]
        cs = conf[b * k:(b + 1) * k]
        texts = [ctx.tokenizer.decode(o.token_ids, skip_special_tokens=True) for o in branch] \
            if spec.search.get("aggregate_paths") else [""] * k
        i = choose_branch(cs, texts, bool(spec.search.get("aggregate_paths")))
        o = branch[i]
        results.append(Output(o.token_ids, o.finish_reason, score=cs[i], extra={
            "cot_branch": i, "cot_first_tokens": first[b * k:(b + 1) * k].tolist(), "cot_confidences": cs}))
    return results


def _validate(spec: StrategySpec) -> None:
    k = spec.search.get("cot_k")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"cot_k must be an integer >= 1 (the branches: optillm's k), got {k!r}")
    if not isinstance(spec.search.get("aggregate_paths"), bool):
        raise ValueError(f"aggregate_paths must be true or false, got {spec.search.get('aggregate_paths')!r}")
    if spec.params.do_sample:
        raise ValueError("do_sample must be false for cot_decoding (each branch continues greedily)")
    if spec.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences must be 1 for cot_decoding (it returns the best of its cot_k "
                         f"branches), got {spec.num_return_sequences}")


def _check_model(spec: StrategySpec, model) -> None:
    v = model.get_output_embeddings().weight.shape[0]
    if spec.search["cot_k"] > v:
        raise ValueError(f"cot_k must be <= the model's vocabulary ({v}), got {spec.search['cot_k']}")


METHODS.register("cot_decoding", SearchMethod(name="cot_decoding", run=cot_batch, validate=_validate,
                                              supports_record=False, check_model=_check_model))
