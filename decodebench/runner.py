"""One run: validated config -> prompts -> engine -> records on disk -> scorers -> metrics -> sinks.

Everything that can be checked is checked before the model loads. Results are written as they are made:
generations batch by batch, then metrics.json last (its presence marks a complete run).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import sys
import time
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from decodebench import data, distributed, models, results
from decodebench.config import ConfigError, prefix_key, validate
from decodebench.decoding.engine import Request
from decodebench.decoding.recorder import check_fields
from decodebench.decoding.strategies import METHODS

log = logging.getLogger("decodebench")

_MODEL_CACHE: dict = {}  # one loaded model, reused by jobs of a multirun in the same process
_SCORING_CACHE: dict = {}  # scoring models (scorers.<name>.model), loaded once per process


def get_model(mcfg: models.ModelConfig, device: str, dtype: str):
    key = (mcfg.name_or_path, mcfg.gguf_file, mcfg.revision, device, dtype)
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


def prepare(cfg: DictConfig) -> dict:
    """All checks that need no model: the strategy, telemetry fields, dataset, scorers, model source."""
    from decodebench.plugins import load_plugins
    from decodebench.scorers import resolve_scorers

    try:
        load_plugins(cfg.get("plugins") or ())
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spec = validate(cfg)
    try:
        record = check_fields(cfg.record)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if record and not METHODS.get(spec.method).supports_record:
        raise ConfigError(f"record: strategy method {spec.method!r} has no per-step telemetry; "
                          "set record=[] or choose a sampling strategy")
    try:
        table = data.load_table(cfg.dataset)
    except ValueError as e:
        raise ConfigError(prefix_key("dataset", str(e))) from None
    try:
        plan = resolve_scorers(OmegaConf.to_container(cfg.scorers, resolve=True))
    except ValueError as e:
        raise ConfigError(prefix_key("scorers", str(e))) from None
    try:
        models.resolve_source(cfg.model)
        check_scoring_models(plan)  # scorers.<name>.model=...: checked now, loaded after generation
        device = distributed.rank_device(models.pick_device(str(cfg.device)))
        models.check_load_options(cfg.model, device)
        if cfg.get("compile", False):
            from decodebench.decoding.compiled import check_compile

            check_compile(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dict(spec=spec, record=record, table=table, plan=plan, device=device,
                dtype=models.pick_dtype(str(cfg.dtype), device))


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

    def attach(self, records: list[dict]) -> None:
        for r in records:
            lps = self.rows.get((r["prompt_id"], r["sample_index"]))
            if lps is not None:
                r["gen_logprobs"] = lps


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


def encode_prompts(prompts, tok, chat: bool) -> dict[str, list[int]]:
    """prompt id -> token ids (a chat template already holds its special tokens)."""
    return {p.id: tok(p.text, add_special_tokens=not chat)["input_ids"] for p in prompts}


def build_requests(prompts, tok, spec, seed: int, chat: bool, ids: Optional[dict] = None) -> list[Request]:
    """One request per (prompt, sample); `ids` (from encode_prompts) saves tokenizing again."""
    ids = ids if ids is not None else encode_prompts(prompts, tok, chat)
    reqs = []
    for p in prompts:
        for s in range(spec.num_return_sequences):
            reqs.append(Request(prompt_id=p.id, prompt_ids=list(ids[p.id]), sample_index=s, params=spec.params,
                                seed=seed))
    return reqs


def run_metrics(stats, wall: float, device: str, mark: Optional[MemoryMark] = None) -> dict:
    gen_s = max(stats.decode_s, 1e-9)
    ttft_total = sum(stats.ttft_s)
    peak = mark.peak_mb() if mark is not None else lifetime_peak_mb(device)
    return {
        "tokens_per_s": stats.generated_tokens / gen_s,
        "prefill_tokens_per_s": stats.prompt_tokens / ttft_total if ttft_total else 0.0,
        "time_to_first_token_s": statistics.median(stats.ttft_s) if stats.ttft_s else 0.0,
        "per_token_latency_ms": statistics.median(stats.step_ms) if stats.step_ms else 0.0,
        "peak_memory_mb": peak,
        "forward_passes_per_token": stats.forward_passes / max(stats.generated_tokens, 1),
        "row_step_efficiency": stats.generated_tokens / stats.row_steps if stats.row_steps else 1.0,
        "compile_time_s": stats.compile_s,
        "tokens_processed_per_token": stats.tokens_processed / max(stats.generated_tokens, 1),
        "generated_tokens": float(stats.generated_tokens),
        "generation_time_s": stats.decode_s,
        "wall_time_s": wall,
    }


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def load_prompts(cfg: DictConfig, prep: dict, tok) -> list:
    """The dataset's prompt records (ConfigError when none are left)."""
    try:
        prompts = data.to_prompts(prep["table"], cfg.dataset, tok)
    except ValueError as e:
        raise ConfigError(prefix_key("dataset", str(e))) from None
    if not prompts:
        raise ConfigError("dataset: no prompts left after loading; check dataset.limit and dataset.prefix_tokens")
    return prompts


def run_info(cfg: DictConfig, prep: dict, spec, prompts: list, num_rows: int, batch_size: int) -> dict:
    """The body of run.json (the applied transform chain is added when generation is done)."""
    return {
        "strategy": spec.describe(), "model": cfg.model.name_or_path, "device": prep["device"],
        "dtype": prep["dtype"], "seed": int(cfg.seed), "batch_size": int(batch_size),
        "batch_size_setting": str(cfg.batch_size), "num_prompts": len(prompts), "num_rows": num_rows,
        "engine": engine_options(cfg),
    }


def engine_options(cfg: DictConfig) -> dict:
    """The engine's settings from the top-level config (none of them changes a generated token)."""
    return {"continuous": bool(cfg.get("continuous", True)), "sync_every": int(cfg.get("sync_every", 4)),
            "compile": bool(cfg.get("compile", False))}


def batch_size_for(cfg: DictConfig, model, reqs: list, spec, scale: int = 1) -> int:
    """`batch_size`, or for `auto` the largest running batch that fits (decoding/engine.py), times
    `scale` (fused sweep points); a batch whose KV state cannot fit is a ConfigError naming the bytes."""
    from decodebench.decoding import engine

    cont = bool(cfg.get("continuous", True))
    if str(cfg.batch_size) == "auto":
        return engine.auto_batch_size(model, reqs, spec, cont)
    bs = int(cfg.batch_size) * scale
    try:
        engine.check_kv_fits(model, bs, reqs, spec, cont)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return bs


def make_record(req: Request, prompt, out, tok, gen_lp: Optional[GenLogprobs] = None) -> dict:
    """One line of generations.jsonl: a request, its prompt record and the engine's output."""
    if gen_lp is not None:
        out = gen_lp.take(req, out)
    rec = {"prompt_id": req.prompt_id, "prompt": prompt.text, "prompt_token_ids": req.prompt_ids,
           "sample_index": req.sample_index, "text": tok.decode(out.token_ids, skip_special_tokens=True),
           "token_ids": out.token_ids, "num_tokens": len(out.token_ids), "finish_reason": out.finish_reason,
           "reference": prompt.reference, "category": prompt.category}
    if out.score is not None:
        rec["score"] = out.score
    if out.telemetry is not None:
        rec["telemetry"] = out.telemetry
    rec.update(out.extra)
    return rec


def finish_run(cfg: DictConfig, run_dir: Path, prep: dict, info: dict, stats, writer, prompts: list,
               model, tok, t_start: float) -> dict:
    """Close generations.jsonl, record the applied chain, score, and write metrics.json last."""
    order = {p.id: k for k, p in enumerate(prompts)}
    writer.close(sort_key=lambda r: (order[r["prompt_id"]], r["sample_index"]))
    info["strategy"]["chain"] = stats.chain  # the transforms actually applied, in order
    results.write_json_atomic(run_dir / results.RUN_INFO, info)
    records = results.read_generations(run_dir)
    if prep.get("gen_lp") is not None:
        prep["gen_lp"].attach(records)  # in memory only: the LM scorers skip their forward for these

    metrics = run_metrics(stats, time.perf_counter() - t_start, prep["device"], prep.get("memory"))
    try:
        scoring = scoring_models(prep["plan"].scoring_models(), prep["device"], prep["dtype"])
        metrics.update(prep["plan"].score(records, model=model, tokenizer=tok, device=prep["device"],
                                          seed=int(cfg.seed), progress=bool(cfg.progress), models=scoring))
    except BaseException:
        results.write_json_atomic(run_dir / "metrics.partial.json", metrics)  # keep what was measured
        raise
    metrics["wall_time_s"] = time.perf_counter() - t_start
    results.write_json_atomic(run_dir / results.METRICS, metrics)
    return {"run_dir": str(run_dir), "metrics": metrics, "num_records": len(records),
            "strategy": info["strategy"]["name"]}


def execute(cfg: DictConfig, run_dir: str | os.PathLike, prep: Optional[dict] = None) -> dict:
    """Run one configuration into `run_dir`; returns {"run_dir", "metrics", ...}."""
    t_start = time.perf_counter()
    prep = prep or prepare(cfg)
    prep = {**prep, "memory": MemoryMark(prep["device"])}
    prep["gen_lp"] = gen_logprobs_for(prep)
    spec = prep["spec"]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    model, tok = get_model(cfg.model, prep["device"], prep["dtype"])
    prompts = load_prompts(cfg, prep, tok)
    reqs = build_requests(prompts, tok, spec, int(cfg.seed), bool(cfg.dataset.chat_template))
    by_id = {p.id: p for p in prompts}
    bs = batch_size_for(cfg, model, reqs, spec)
    info = run_info(cfg, prep, spec, prompts, len(reqs), bs)
    results.write_json_atomic(run_dir / results.RUN_INFO, info)

    writer = results.GenerationsWriter(run_dir)

    def on_batch(idx, outs):
        writer.write([make_record(reqs[i], by_id[reqs[i].prompt_id], o, tok, prep["gen_lp"])
                      for i, o in zip(idx, outs)])

    with _progress(len(reqs), bool(cfg.progress), f"{spec.name}") as bar:
        _, stats = distributed.generate(model, tok, reqs, spec, model_cfg=cfg.model, dtype=prep["dtype"],
                                        plugins=cfg.get("plugins") or (),
                                        batch_size=bs, record=record_fields(prep), progress=bar,
                                        on_batch=on_batch, **engine_options(cfg))
    return finish_run(cfg, run_dir, prep, info, stats, writer, prompts, model, tok, t_start)


def summarize(res: dict) -> str:
    m = res["metrics"]
    keys = [k for k in ("tokens_per_s", "diversity", "distinct_2", "rep_2", "perplexity", "gen_length") if k in m]
    parts = ", ".join(f"{k}={m[k]:.4g}" for k in keys)
    return (f"decodebench: {res['num_records']} generations ({res['strategy']}) in {m['wall_time_s']:.1f} s; "
            f"{parts}\nresults: {res['run_dir']}")


def machine_line(res: dict) -> str:
    return json.dumps(results.clean({"run_dir": res["run_dir"], "metrics": res["metrics"]}), sort_keys=True)
