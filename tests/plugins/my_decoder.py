"""The README's worked example ("Your own search method"): transformers' top-k sampling decoder as a plugin,
on the engine's primitives. `strategy.method=my_topk` chooses it; `do_sample=false` makes it greedy."""

import torch

from decodebench.decoding import register_search, sample
from decodebench.decoding.engine.batch import Output, request_keys


@register_search("my_topk", supports_record=False)
def my_topk(reqs, spec, ctx):
    rt, n, width = ctx.runner, len(reqs), max(len(r.prompt_ids) for r in reqs)
    kv = rt.allocate(n, width + spec.max_new_tokens)          # static KV state: n rows x C columns
    kv.col = width                                            # prompts end at column `width`
    valid = torch.zeros(n, kv.capacity, dtype=torch.bool, device=rt.device)
    ids = torch.zeros(n, kv.capacity, dtype=torch.long, device=rt.device)
    logits, _, pos = rt.prefill(torch.arange(n, device=rt.device), [r.prompt_ids for r in reqs],
                                ctx.pad_id, valid, ids)
    keys, out, done = request_keys(reqs, rt.device), [[] for _ in reqs], [False] * n
    for step in range(spec.max_new_tokens):
        kth = logits.topk(spec.params.top_k or 50).values[:, -1:]  # transformers' TopKLogitsWarper
        tok = sample(logits.masked_fill(logits < kth, float("-inf")), keys, step, bool(spec.params.do_sample))
        for i, t in enumerate(tok.tolist()):
            if not done[i]:
                out[i].append(t)
                done[i] = t in ctx.eos or len(out[i]) == spec.max_new_tokens
        if all(done):
            break
        valid[:, kv.col] = True                               # every row writes the same column
        logits, _ = rt.decode(tok[:, None], pos[:, None], valid)
        logits, pos, kv.col = logits[:, -1], pos + 1, kv.col + 1
    return [Output(o, "eos" if o[-1] in ctx.eos else "length") for o in out]
