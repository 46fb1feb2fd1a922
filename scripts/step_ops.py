"""aten ops per decode step outside the model's forward, by component: where the step's dispatch goes.

    .venv/bin/python scripts/step_ops.py [--model embedded|tiny] [--strategy topp] [--batch 8]
        [--new-tokens 16] [--views] [--paths host|accelerator]

Runs eager `generate` under a `TorchDispatchMode` and attributes every aten op dispatched inside
`RunningBatch.step` (the model's forward excluded) to the component running it: `chain` (the logits
transforms), `sample` (the exponential race), `record` (EOS / length / criteria bookkeeping), `stop`
(user criteria, inside `record`), `chain.update` (count tables), `feed` (the KV write and the mask, the
forward excluded) and `host_after` (counters, the finished flag's copy). View ops (slices, unsqueezes)
are left out unless `--views`: they launch no kernel on a GPU. Also prints the host reads and the tensors
built from Python data per step. On a GPU each counted op is a kernel launch.

`--paths accelerator` counts, on this CPU, the paths a GPU takes in eager mode: the CPU's exact shortcuts
(the candidate check instead of the sort, the race over candidates, row subsets picked by `nonzero`) trade
ops for work, which pays on a CPU, where an op costs microseconds and a sort of the vocabulary
milliseconds; on a GPU every op is a launch, so eager GPU steps sort and race the whole row instead.
"""

from __future__ import annotations

import argparse
import collections
import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

VIEWS = {"aten.slice.Tensor", "aten.select.int", "aten.unsqueeze.default", "aten.expand.default",
         "aten.view.default", "aten.detach_.default", "aten.detach.default", "aten.alias.default",
         "aten._unsafe_view.default", "aten.squeeze.dim", "aten.t.default", "aten.as_strided.default"}
HOST_READS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.item.default",
              "aten.equal.default"}
HOST_BUILT = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default", "aten.scalar_tensor.default"}


class ComponentOps(TorchDispatchMode):
    """Counts aten ops per (component, op) while a component label is set."""

    def __init__(self):
        super().__init__()
        self.label: str | None = None
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.label is not None:
            self.ops[(self.label, str(func))] += 1
        return func(*args, **(kwargs or {}))


def _labelled(mode: ComponentOps, label: str | None, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        prev, mode.label = mode.label, label
        try:
            return fn(*a, **k)
        finally:
            mode.label = prev
    return wrapper


def count_by_component(model, tok, strategy: dict, prompts, batch: int = 8, new_tokens: int = 16,
                       accelerator: bool = False):
    """({(component, op): count}, steps) over eager `generate` of `batch` requests. `accelerator`: on a
    CPU, take the paths an accelerator takes (`candidates.accelerator_paths`): what a GPU would launch."""
    import contextlib

    from decodebench.decoding.transforms.candidates import accelerator_paths
    from decodebench.decoding.transforms import chain as chain_mod
    from decodebench.decoding.engine import running, step as step_mod, stopping
    from decodebench.decoding.engine import Request, generate
    from decodebench.decoding.search.spec import build_strategy

    spec = build_strategy({**strategy, "max_new_tokens": new_tokens})
    reqs = [Request(prompt_id=str(i), prompt_ids=list(prompts[i % len(prompts)]), params=spec.params, seed=1)
            for i in range(batch)]
    generate(model, tok, reqs[:1], spec)  # warm: per-device constants are made once, not per step
    mode, steps = ComponentOps(), [0]
    patches = [(running.RunningBatch, "step"), (step_mod, "sample"), (step_mod, "record"), (step_mod, "feed"),
               (running, "host_after"), (chain_mod.LogitsChain, "__call__"), (chain_mod.LogitsChain, "update"),
               (stopping.StopChecker, "update_criteria")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in patches]
    labels = {"step": "other", "sample": "sample", "record": "record", "feed": "feed", "host_after": "host_after",
              "__call__": "chain", "update": "chain.update", "update_criteria": "stop"}

    def on_step(orig):
        def step(rb):
            if not getattr(rb.rt, "_ops_wrapped", False):
                rb.rt.decode_fn, rb.rt._ops_wrapped = _labelled(mode, None, rb.rt.decode_fn), True
            steps[0] += 1
            return _labelled(mode, "other", orig)(rb)
        return step

    try:
        for obj, name, orig in saved:
            setattr(obj, name, on_step(orig) if name == "step" else _labelled(mode, labels[name], orig))
        with accelerator_paths() if accelerator else contextlib.nullcontext(), mode:
            generate(model, tok, reqs, spec, batch_size=batch)
    finally:
        for obj, name, orig in saved:
            setattr(obj, name, orig)
    return mode.ops, steps[0]


def report(ops, steps: int, views: bool = False, top: int = 6) -> dict:
    """Print ops per step by component (and each component's commonest ops); return the per-step totals."""
    by = collections.defaultdict(collections.Counter)
    for (label, op), n in ops.items():
        if views or op not in VIEWS:
            by[label][op] += n
    totals = {label: sum(c.values()) / steps for label, c in by.items()}
    for label in sorted(totals, key=lambda k: -totals[k]):
        common = ", ".join(f"{op.removeprefix('aten.')} {n / steps:.1f}" for op, n in by[label].most_common(top))
        print(f"  {label:12s} {totals[label]:6.1f} ops/step   {common}")
    reads = sum(n for (_, op), n in ops.items() if op in HOST_READS) / steps
    built = sum(n for (_, op), n in ops.items() if op in HOST_BUILT) / steps
    print(f"  total        {sum(totals.values()):6.1f} ops/step ({'with' if views else 'without'} views); "
          f"host reads {reads:.2f}/step, tensors from Python data {built:.2f}/step")
    return {"total": sum(totals.values()), "host_reads": reads, "host_built": built, **totals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["embedded", "tiny"], default="embedded")
    ap.add_argument("--strategy", default="topp", help="a strategy of scripts/bench_engine.py (greedy, topp, ...)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--views", action="store_true", help="count view ops too")
    ap.add_argument("--paths", choices=["host", "accelerator"], default="host",
                    help="accelerator: the paths a GPU takes in eager mode (full sort, whole-row race), on this CPU")
    a = ap.parse_args()
    from bench_engine import STRATS

    from decodebench import data, models

    cfg = models.ModelConfig() if a.model == "embedded" else models.ModelConfig(name_or_path="tiny-random")
    model, tok = models.load_model(cfg, device="cpu", dtype="float32")
    texts = [p.text for p in data.load_prompts(data.DatasetConfig(limit=a.batch))]
    prompts = [tok(t)["input_ids"][:64] for t in texts]
    acc = a.paths == "accelerator"
    ops, steps = count_by_component(model, tok, STRATS[a.strategy], prompts, a.batch, a.new_tokens, acc)
    where = "eager, an accelerator's paths on the CPU" if acc else "eager CPU"
    print(f"{a.strategy}, batch {a.batch}, {a.model} model (vocab {model.config.vocab_size}), {steps} steps, {where}:")
    report(ops, steps, a.views)


if __name__ == "__main__":
    main()
