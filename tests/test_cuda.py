"""CUDA checks (skip without a GPU): the sampling and beam loops make no device sync outside the host
work, the early exit fires while the GPU is busy, and CUDA results equal the CPU reference. Run them with
`bash scripts/gpu_check.sh` on a machine with a GPU."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding.engine import running
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


@pytest.fixture(scope="module")
def gpu_model():
    from decodebench.models import ModelConfig, load_model

    return load_model(ModelConfig(), device="cuda", dtype="float32")


def reqs_for(tok, spec, n=24):
    texts = [f"Question {i}: say something short." for i in range(n)]
    return [Request(prompt_id=str(i), prompt_ids=tok(t)["input_ids"], params=spec.params, seed=1)
            for i, t in enumerate(texts)]


def test_sampling_step_makes_no_device_sync(gpu_model, monkeypatch):
    """Every step runs under sync-debug "error"; only the host work (every k steps) may read the device."""
    model, tok = gpu_model
    spec = build_strategy({"name": "topp", "do_sample": True, "top_p": 0.9, "max_new_tokens": 32})
    step = running.RunningBatch.step

    def strict_step(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            step(self)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(running.RunningBatch, "step", strict_step)
    outs, stats = generate(model, tok, reqs_for(tok, spec), spec, batch_size=8, sync_every=4)
    assert stats.generated_tokens == sum(len(o.token_ids) for o in outs) > 0


def test_early_exit_fires_while_the_gpu_is_busy(gpu_model):
    """Rows that end early stop the batch long before max_new_tokens, even with a large batch queued."""
    model, tok = gpu_model
    spec = build_strategy({"name": "greedy", "max_new_tokens": 512, "stopping": ["newline"]})
    reqs = reqs_for(tok, spec, n=64)
    outs, stats = generate(model, tok, reqs, spec, batch_size=64, continuous=False)
    longest = max(len(o.token_ids) for o in outs)
    assert longest < 512
    assert stats.row_steps <= (longest + 2 * 4) * len(reqs)  # left within k steps of the last row ending


def test_cuda_equals_cpu_greedy(gpu_model, embedded):
    model, tok = gpu_model
    spec = build_strategy({"name": "greedy", "max_new_tokens": 24})
    reqs = reqs_for(tok, spec, n=6)
    gpu, _ = generate(model, tok, reqs, spec, batch_size=3)
    cpu, _ = generate(embedded[0], embedded[1], reqs, spec, batch_size=3)
    assert [o.token_ids for o in gpu] == [o.token_ids for o in cpu]


def test_beam_early_exit_and_no_sync_in_the_step(gpu_model, monkeypatch):
    """Beam search's steps run under sync-debug "error": from the first token's timing (its one sync) to
    the end of decoding (the other), nothing reads the device; the newline criterion still ends it early."""
    from decodebench.decoding.search import beam
    from decodebench.decoding.engine.batch import BatchContext

    model, tok = gpu_model
    spec = build_strategy({"name": "beam", "method": "beam", "num_beams": 4, "max_new_tokens": 256,
                           "stopping": ["newline"]})
    first_token, decode_done, advance = BatchContext.first_token, BatchContext.decode_done, beam.BeamRows.advance
    strict_steps = []

    def strict_after_first_token(self, t0):
        now = first_token(self, t0)
        torch.cuda.set_sync_debug_mode("error")
        return now

    def lenient_from_decode_done(self, t_first, steps):
        torch.cuda.set_sync_debug_mode(0)
        decode_done(self, t_first, steps)

    def counted_advance(self, *a, **k):
        strict_steps.append(torch.cuda.get_sync_debug_mode() == 2)  # 2: "error"
        return advance(self, *a, **k)

    monkeypatch.setattr(BatchContext, "first_token", strict_after_first_token)
    monkeypatch.setattr(BatchContext, "decode_done", lenient_from_decode_done)
    monkeypatch.setattr(beam.BeamRows, "advance", counted_advance)
    try:
        outs, stats = generate(model, tok, reqs_for(tok, spec, n=4), spec, batch_size=4)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert strict_steps and all(strict_steps), "every beam step ran under sync-debug mode"
    assert stats.steps < 256 and all(o.token_ids for o in outs)
