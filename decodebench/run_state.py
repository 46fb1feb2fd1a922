"""What a run holds besides its plan: the loaded models (one generating model, reused by a multirun's jobs;
scoring models loaded once per process), the run's own peak memory, and the generated tokens' log-probs
that the LM scorers reuse. The runner, the sweep, the score verb and the data-parallel workers share them.
"""

from __future__ import annotations

import resource
from dataclasses import replace as dc_replace
from typing import Optional

from decodebench import models, results
from decodebench.decoding.engine.batch import Request
from decodebench.decoding.search.methods import METHODS

_MODEL_CACHE: dict = {}  # one loaded model, reused by jobs of a multirun in the same process
_SCORING_CACHE: dict = {}  # scoring models (scorers.<name>.model), loaded once per process


def _model_key(mcfg, device: str, dtype: str) -> tuple:
    return (mcfg.name_or_path, mcfg.gguf_file, mcfg.revision, device, dtype)


def get_tokenizer(mcfg: models.ModelConfig, device: str, dtype: str):
    """The tokenizer, before any weights: the loaded model's when it is already here."""
    key = _model_key(mcfg, device, dtype)
    return _MODEL_CACHE[key][1] if key in _MODEL_CACHE else models.load_tokenizer(mcfg)


def get_model(mcfg: models.ModelConfig, device: str, dtype: str):
    key = _model_key(mcfg, device, dtype)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = models.load_model(mcfg, device=device, dtype=dtype)
    return _MODEL_CACHE[key]


def scoring_models(names, device: str, dtype: str) -> dict:
    """{name: (model, tokenizer)} for the scorers' `model` options, loaded once per process and reused by
    every sweep point and multirun job that names them (they never change between points)."""
    out = {}
    for name in sorted(names):
        key = (name, device, dtype)
        if key not in _SCORING_CACHE:
            _SCORING_CACHE[key] = models.load_model(models.ModelConfig(name_or_path=name), device=device, dtype=dtype)
        out[name] = _SCORING_CACHE[key]
    return out


def check_scoring_models(plan) -> None:
    """Every scorers.<scorer>.model resolves and its tokenizer loads; ValueError naming the scorer."""
    for scorer, opts in plan.entries:
        name = opts.get("model")
        if not name or any(k[0] == name for k in _SCORING_CACHE):
            continue
        try:
            mcfg = models.ModelConfig(name_or_path=name)
            models.resolve_source(mcfg)
            models.check_tokenizer(mcfg)
        except ValueError as e:
            raise ValueError(f"scorers.{scorer.name}.model={name}: " + str(e).split(": ", 1)[-1]) from None


class MemoryMark:
    """The run's own peak memory, from when it was made: CUDA peak statistics reset here; on CPU the
    kernel's resident high-water mark is reset (/proc/self/clear_refs) and the peak is its growth over
    the resident size now. Where the mark cannot be reset, the process's lifetime peak is reported."""

    def __init__(self, device: str):
        self.device = device
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)
            self.base = 0.0
            return
        self.base = _proc_status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak resident set size (VmHWM) to the current one
            self.reset = True
        except OSError:
            self.reset = False

    def peak_mb(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.reset and self.base is not None:
            hwm = _proc_status("VmHWM")
            if hwm is not None:
                return max(hwm - self.base, 0.0)
        return lifetime_peak_mb(self.device)


def lifetime_peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _proc_status(field: str) -> Optional[float]:
    """A /proc/self/status size in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


LM_SCORERS = ("perplexity", "coherence")  # scorers that read the log-probs of the generated tokens


class GenLogprobs:
    """The generated tokens' raw log-probs (the engine's `logprob_raw` telemetry, no extra forward), kept
    for perplexity and coherence under the generating model; out of generations.jsonl unless recorded."""

    def __init__(self, user_fields):
        self.strip = "logprob_raw" not in user_fields
        self.rows: dict = {}

    def take(self, req: Request, out):
        tele = out.telemetry or {}
        if "logprob_raw" not in tele:
            return out
        self.rows[(req.prompt_id, req.sample_index)] = tele["logprob_raw"]
        if self.strip:
            rest = {k: v for k, v in tele.items() if k != "logprob_raw"}
            out = dc_replace(out, telemetry=rest or None)
        return out

    def attach(self, records: list) -> None:
        """`gen_logprobs` on each record generated here (a GenerationRecord's `extra`, in memory only)."""
        for r in records:
            rec = isinstance(r, results.GenerationRecord)
            lps = self.rows.get((r.prompt_id, r.sample_index) if rec else (r["prompt_id"], r["sample_index"]))
            if lps is not None:
                (r.extra if rec else r)["gen_logprobs"] = lps


def gen_logprobs_for(prep: dict) -> Optional[GenLogprobs]:
    """A collector when an LM scorer scores under the generating model and the method can record."""
    uses = any(s.name in LM_SCORERS and not o.get("model") for s, o in prep["plan"].entries)
    if not uses or not METHODS.get(prep["spec"].method).supports_record:
        return None
    return GenLogprobs(prep["record"])


def record_fields(prep: dict) -> tuple:
    """The telemetry to record: the user's, plus `logprob_raw` when a collector wants it."""
    rec = tuple(prep["record"])
    return rec + ("logprob_raw",) if prep.get("gen_lp") is not None and "logprob_raw" not in rec else rec


