"""Nothing from the host inside the decode step: per step, outside the model's forward, no host read
(`.item()`, `bool(t)`, `.tolist()`) and no tensor built from Python data, for the default chains.

Counted with a TorchDispatchMode around eager `generate`, switched on inside `RunningBatch.step` and off
inside the model's forward. On CPU a tensor built from Python data shows as `aten.lift_fresh` (from
`torch.tensor` / `as_tensor`) or `aten.scalar_tensor`; a host read as `aten._local_scalar_dense`,
`aten.is_nonzero` (`bool(t)`) or `aten.item`;
`.tolist()` does not dispatch, so it is counted by wrapping `Tensor.tolist`.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from decodebench.decoding.engine import running
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy

HOST_READS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.item.default", "aten.equal.default"}
HOST_BUILT = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default", "aten.scalar_tensor.default"}
VIEWS = {"aten.slice.Tensor", "aten.select.int", "aten.unsqueeze.default", "aten.expand.default",
         "aten.view.default", "aten.detach_.default", "aten.detach.default", "aten.alias.default",
         "aten._unsafe_view.default", "aten.squeeze.dim", "aten.t.default"}

CHAINS = {
    "greedy": {"name": "greedy"},
    "temperature": {"name": "t", "do_sample": True, "temperature": 0.7},
    "top_p": {"name": "p", "do_sample": True, "top_p": 0.95},
    "min_p": {"name": "m", "do_sample": True, "min_p": 0.05},
    "typical": {"name": "ty", "do_sample": True, "typical_p": 0.9},
    "penalties": {"name": "pen", "do_sample": True, "repetition_penalty": 1.2, "presence_penalty": 0.3,
                  "frequency_penalty": 0.2, "top_p": 0.9},
}


class StepOps(TorchDispatchMode):
    """Counts aten ops while `on`; `tolist` calls are counted apart (they do not dispatch)."""

    def __init__(self):
        super().__init__()
        self.on, self.ops, self.tolist = False, collections.Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_step_ops(model, tok, strategy: dict, batch: int = 8, new_tokens: int = 8):
    """(ops Counter over all steps, steps, tolist calls) of eager generate, outside the forward."""
    spec = build_strategy({**strategy, "max_new_tokens": new_tokens})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok("abc" * (i + 1))["input_ids"], params=spec.params, seed=1)
            for i in range(batch)]
    generate(model, tok, reqs[:1], spec)  # warm: constants made once per device are not the step's
    mode, steps = StepOps(), [0]
    orig_step, orig_tolist = running.RunningBatch.step, torch.Tensor.tolist

    def step(rb):
        if not getattr(rb.rt, "_counted", False):
            fwd = rb.rt.decode_fn

            def forward(*a):  # the model's own ops are not the step's
                mode.on = False
                try:
                    return fwd(*a)
                finally:
                    mode.on = True

            rb.rt.decode_fn, rb.rt._counted = forward, True
        mode.on, steps[0] = True, steps[0] + 1
        try:
            orig_step(rb)
        finally:
            mode.on = False

    def tolist(t):
        mode.tolist += int(mode.on)
        return orig_tolist(t)

    running.RunningBatch.step = step
    torch.Tensor.tolist = tolist
    try:
        with mode:
            generate(model, tok, reqs, spec, batch_size=batch)
    finally:
        running.RunningBatch.step, torch.Tensor.tolist = orig_step, orig_tolist
    return mode.ops, steps[0], mode.tolist


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_no_host_read_and_no_host_built_tensor_per_step(tiny, chain):
    model, tok = tiny
    ops, steps, tolist = count_step_ops(model, tok, CHAINS[chain])
    assert steps >= 7
    reads = {k: v for k, v in ops.items() if k in HOST_READS}
    built = {k: v for k, v in ops.items() if k in HOST_BUILT}
    assert reads == {} and tolist == 0, (reads, tolist)
    assert built == {}, built


def test_the_counter_sees_host_reads_and_host_built_tensors(tiny, monkeypatch):
    """The dispatch count fails when a step does read the host or builds a tensor from Python data."""
    model, tok = tiny
    orig = running.RunningBatch.step

    def leaky(rb):
        orig(rb)
        bool(rb.finished.any())
        rb.lengths.tolist()
        rb.lengths.add_(torch.tensor(0, device=rb.lengths.device))

    monkeypatch.setattr(running.RunningBatch, "step", leaky)
    ops, steps, tolist = count_step_ops(model, tok, CHAINS["greedy"])
    assert sum(ops[k] for k in HOST_READS) == steps and tolist == steps
    assert ops["aten.lift_fresh.default"] == steps


def test_aten_ops_per_step_outside_the_forward(tiny):
    """A regression guard on the step's dispatch (each op is a kernel launch on a GPU): the engine's own
    bookkeeping (everything but the chain and the sampler) stays small."""
    model, tok = tiny
    ops, steps, _ = count_step_ops(model, tok, CHAINS["greedy"])
    kernels = sum(v for k, v in ops.items() if k not in VIEWS) / steps
    assert kernels <= 30, sorted(ops.items(), key=lambda kv: -kv[1])


LARGE_VOCAB_CHAINS = {
    "top_p": CHAINS["top_p"],
    "top_k_top_p": {"name": "kp", "do_sample": True, "top_k": 50, "top_p": 0.9},
    "penalties": CHAINS["penalties"],
}


@pytest.mark.parametrize("chain", sorted(LARGE_VOCAB_CHAINS))
def test_no_host_read_at_the_embedded_vocabulary(embedded, chain):
    """At V = 49,152 top-p takes the sort-free candidate path (and top-k + top-p the support path): the
    per-row fallback and the race over the candidates still read nothing back and build nothing from
    Python data."""
    model, tok = embedded
    assert model.config.vocab_size > 4 * 1024  # past the candidate path's threshold (2 K < V)
    ops, steps, tolist = count_step_ops(model, tok, LARGE_VOCAB_CHAINS[chain], batch=8, new_tokens=6)
    assert steps >= 5
    assert ops["aten.topk.default"] >= steps  # the candidate (or support) path ran, not a full sort
    reads = {k: v for k, v in ops.items() if k in HOST_READS}
    built = {k: v for k, v in ops.items() if k in HOST_BUILT}
    assert reads == {} and tolist == 0, (reads, tolist)
    assert built == {}, built


ACCELERATOR_CHAINS = {**LARGE_VOCAB_CHAINS, "min_p": CHAINS["min_p"], "typical": CHAINS["typical"]}
# what an accelerator must never run inside the step: a row subset whose size only the data knows
DATA_SHAPED = {"aten.nonzero.default", "aten.masked_select.default", "aten.unique_consecutive.default",
               "aten._unique2.default"}


@pytest.mark.parametrize("chain", sorted(ACCELERATOR_CHAINS))
def test_an_accelerators_paths_pick_no_row_subsets_and_draw_the_same_tokens(embedded, chain):
    """`accelerator_paths` sends this CPU down the paths a GPU takes in eager mode: no `nonzero` (a sync on
    a device), no candidate check, no race over candidates; and the tokens equal the CPU's own paths, whose
    shortcuts are exact. scripts/step_ops.py --paths accelerator counts these steps."""
    from decodebench.decoding.transforms.candidates import accelerator_paths

    model, tok = embedded
    strategy = ACCELERATOR_CHAINS[chain]
    with accelerator_paths():
        ops, steps, tolist = count_step_ops(model, tok, strategy, batch=5, new_tokens=6)
    assert steps >= 5
    shaped = {k: v for k, v in ops.items() if k in DATA_SHAPED or k in HOST_READS or k in HOST_BUILT}
    assert shaped == {} and tolist == 0, shaped
    host_ops, _, _ = count_step_ops(model, tok, strategy, batch=5, new_tokens=6)
    assert host_ops["aten.nonzero.default"] >= 1  # the CPU's own paths do pick rows: the switch did switch

    spec = build_strategy({**strategy, "max_new_tokens": 12})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok("Once upon a time" + " there" * i)["input_ids"],
                    params=spec.params, seed=4) for i in range(5)]
    host, _ = generate(model, tok, reqs, spec, batch_size=5)
    with accelerator_paths():
        acc, _ = generate(model, tok, reqs, spec, batch_size=5)
    assert [o.token_ids for o in acc] == [o.token_ids for o in host]


def test_an_accelerators_eager_top_p_step_launches_few_kernels(embedded):
    """A regression guard on what an eager GPU step would launch for top-p (scripts/step_ops.py --paths
    accelerator, 63 non-view ops at batch 8 when this was written): the sort, the race over the row, one
    gather of the rows' noise words from the running batch's table (splitmix64's 16 ops on `[B]` would come
    back without it), the bookkeeping; the CPU's candidate check (about 150 more) stays off the accelerator."""
    from decodebench.decoding.transforms.candidates import accelerator_paths

    model, tok = embedded
    with accelerator_paths():
        ops, steps, _ = count_step_ops(model, tok, CHAINS["top_p"], batch=8, new_tokens=6)
    kernels = sum(v for k, v in ops.items() if k not in VIEWS) / steps
    assert ops["aten.sort.default"] == steps and ops["aten.topk.default"] == 0
    assert ops["aten.gather.default"] >= steps  # the word table is read, not recomputed
    assert kernels <= 70, sorted(ops.items(), key=lambda kv: -kv[1])
