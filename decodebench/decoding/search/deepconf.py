"""DeepConf (`strategy=deepconf`): Fu et al. 2025, "Deep Think with Confidence", as the authors' code
(facebookresearch/deepconf: `deepconf/utils.py`, `processors.py`, `wrapper.py`) computes it.

A prompt's `num_return_sequences` traces are sampled as `strategy=sample` samples them (same noise, same
tokens), and each token gets a confidence: minus the mean of the `conf_topk` (20) largest log-probabilities
of the model's raw next-token distribution, rounded to 3 decimals (`compute_confidence`). A trace's group
confidences are the means of its sliding windows of `window_size` tokens (one mean when it is shorter;
`compute_least_grouped`); its `min_conf` is the smallest.

    deepconf_mode=offline  every trace runs to the end; the selector filters and votes (below)
    deepconf_mode=online   the first `warmup_traces` of each prompt run to the end and set the bar
                           conf_bar = percentile(their min_conf, 100 - confidence_percentile); every later
                           trace stops (its next token is forced to EOS, finish_reason `gconf_threshold`) as
                           soon as the mean confidence of its last `window_size` tokens falls below the bar

`selector=deepconf` (decodebench/selectors.py) then votes over the traces with an answer (and, online,
a min_conf at or above the bar, as the code's `all_voting_traces`) by `deepconf_vote`, one of the code's
`compute_all_voting_results` names: majority, mean_confidence_weighted, tail_confidence_weighted,
bottom_window_weighted, min_window_weighted, top10_tail_filtered, top10_bottom_window_filtered (keep the
10% most confident traces by tail / bottom-10%-window confidence, then a confidence-weighted vote).

Where the code and the paper differ, this follows the code: confidences come from the raw logits (vLLM's
logprobs), the online bar is the `100 - confidence_percentile` percentile (confidence_percentile=90 keeps
the traces above the warmup's 10th percentile), and the stop test uses unrounded confidences (the logits
processor) while min_conf uses rounded ones. One change of decodebench's own: the voting's window is
`window_size` (the code fixes 2048 there, the default here too).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from decodebench.decoding.search.row_loop import run_rows
from decodebench.decoding.engine.batch import BatchContext, Output, Request
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec
from decodebench.decoding.search.votes import VOTES, conf_bar, group_confidences

def token_confidence(raw: torch.Tensor, k: int) -> torch.Tensor:
    """`[B]` minus the mean of the k largest log-probabilities of `softmax(raw)` `[B, V]`."""
    return -raw.float().log_softmax(dim=-1).topk(k, dim=-1).values.mean(dim=-1)


def _trace_runner(spec: StrategySpec, ctx: BatchContext, bars: Optional[torch.Tensor]):
    """A `run_rows` call that records each row's token confidences (and, with `bars` `[B]`, stops rows
    whose last-window mean confidence falls below their bar)."""
    k, w, L = int(spec.search["conf_topk"]), int(spec.search["window_size"]), spec.max_new_tokens

    def run(rows: list[Request]) -> tuple[list[Output], list[list[float]], list[bool]]:
        B, dev = len(rows), ctx.runner.device
        csum = torch.zeros((B, L + 1), dtype=torch.float64, device=dev)
        confs = torch.zeros((B, L), dtype=torch.float64, device=dev)
        stopped = torch.zeros(B, dtype=torch.bool, device=dev)

        def before(step, raw, processed, live):
            c = token_confidence(raw, k).double()
            confs[:, step], csum[:, step + 1] = c, csum[:, step] + c
            if bars is None or step + 1 < w:
                return processed
            force = live & ((csum[:, step + 1] - csum[:, step + 1 - w]) / w < bars)
            stopped.logical_or_(force)
            eos = torch.full_like(processed, float("-inf"))
            eos[:, ctx.eos[0]] = 0.0  # the code keeps EOS's logit; 0 also serves a row whose EOS was banned
            return torch.where(force[:, None], eos, processed)

        outs = run_rows(rows, spec, ctx, before=before)
        host = confs.tolist()
        return outs, [[round(x, 3) for x in host[i][:len(o.token_ids)]] for i, o in enumerate(outs)], stopped.tolist()
    return run


@torch.inference_mode()
def deepconf_batch(reqs: list[Request], spec: StrategySpec, ctx: BatchContext) -> list[Output]:
    s, w = spec.search, int(spec.search["window_size"])
    online = s["deepconf_mode"] == "online"
    warm = [i for i, r in enumerate(reqs) if not online or r.sample_index < s["warmup_traces"]]
    results: list[Optional[Output]] = [None] * len(reqs)
    outs, confs, _ = _trace_runner(spec, ctx, None)([reqs[i] for i in warm])
    mins: dict[str, list[float]] = {}
    for i, o, c in zip(warm, outs, confs):
        m = min(group_confidences(c, w))
        results[i] = dataclasses.replace(o, extra={"deepconf_confs": c, "deepconf_min_conf": m})
        mins.setdefault(reqs[i].prompt_id, []).append(m)
    if not online:
        return results  # type: ignore[return-value]
    bar = {p: conf_bar(v, s["confidence_percentile"]) for p, v in mins.items()}
    rest = [i for i in range(len(reqs)) if results[i] is None]
    if rest:
        bars = torch.tensor([bar[reqs[i].prompt_id] for i in rest], dtype=torch.float64, device=ctx.runner.device)
        outs, confs, stopped = _trace_runner(spec, ctx, bars)([reqs[i] for i in rest])
        for i, o, c, st in zip(rest, outs, confs, stopped):
            m = min(group_confidences(c, w))
            results[i] = dataclasses.replace(o, finish_reason="gconf_threshold" if st else o.finish_reason,
                                             extra={"deepconf_confs": c, "deepconf_min_conf": m})
    for i, r in enumerate(reqs):
        results[i].extra.update(deepconf_conf_bar=bar[r.prompt_id], deepconf_warmup=r.sample_index < s["warmup_traces"])
    return results  # type: ignore[return-value]


def _validate(spec: StrategySpec) -> None:
    s = spec.search
    if s.get("deepconf_mode") not in ("offline", "online"):
        raise ValueError(f"deepconf_mode must be offline or online, got {s.get('deepconf_mode')!r}")
    for key in ("conf_topk", "window_size", "warmup_traces"):
        v = s.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    p = s.get("confidence_percentile")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
        raise ValueError(f"confidence_percentile must be in [0, 100], got {p!r}")
    if s["deepconf_mode"] == "online" and not s["warmup_traces"] < spec.num_return_sequences:
        raise ValueError(f"warmup_traces must be < num_return_sequences (the traces per prompt) in online mode, "
                         f"got {s['warmup_traces']} >= {spec.num_return_sequences}")
    if s.get("deepconf_vote") not in VOTES:
        raise ValueError(f"deepconf_vote must be one of {', '.join(VOTES)}, got {s.get('deepconf_vote')!r}")


def _check_model(spec: StrategySpec, model) -> None:
    v = model.get_output_embeddings().weight.shape[0]
    if spec.search["conf_topk"] > v:
        raise ValueError(f"conf_topk must be <= the model's vocabulary ({v}), got {spec.search['conf_topk']}")


METHODS.register("deepconf", SearchMethod(name="deepconf", run=deepconf_batch, validate=_validate,
                                          supports_record=False, check_model=_check_model))
