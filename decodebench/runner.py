"""One run: validated specs (decodebench/specs.py) -> prompts -> engine -> records on disk -> scorers -> metrics -> sinks.

Everything that can be checked is checked before the model loads. Results are written as they are made:
generations batch by batch, then metrics.json last (its presence marks a complete run).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from dataclasses import dataclass, replace
from dataclasses import replace as dc_replace
from typing import Any, Optional

from decodebench import data, distributed, models, preemption, results, resume
from decodebench.api_models.settings import is_api
from decodebench.config import ConfigError, check_min_new_tokens, prefix_key, validate
from decodebench.data_files import SettingError
from decodebench.decoding.engine import BatchStats, Request
from decodebench.decoding.engine.recorder import check_fields
from decodebench.decoding.search.methods import METHODS
from decodebench.dirlock import DirLock
from decodebench.run_state import (  # noqa: F401  (re-exported: the run's models, memory and log-probs)
    GenLogprobs, MemoryMark, check_scoring_models, gen_logprobs_for,
    get_tokenizer, lifetime_peak_mb, record_fields, scoring_models,
)
from decodebench.run_state import get_model as _load_model
from decodebench.run_metrics import run_metrics  # noqa: F401  (re-exported)
from decodebench.specs import RunSpec

log = logging.getLogger("decodebench")

def get_model(mcfg: models.ModelConfig, device: str, dtype: str):
    """The generating model, loaded once and reused by a multirun's jobs (run_state.get_model)."""
    return _load_model(mcfg, device, dtype)


def rows_per_forward(run: RunSpec, points: int = 1, num_beams: int = 1) -> Optional[int]:
    """KV cache rows a running batch may hold (for batch_size=auto: None, the engine sizes it to fit, except
    for beams: one prompt's beams, the smallest batch the engine can run)."""
    beams = max(int(run.strategy.get("num_beams") or 1), num_beams, 1)
    if str(run.batch_size) == "auto":
        return points * beams if beams > 1 else None
    return int(run.batch_size) * points * beams


def checked_prompts(run: RunSpec, prep: dict, rows: Optional[int], max_new_tokens: int, specs: tuple = ()):
    """Prompts and their token ids, checked against the model's config (positions, vocabulary, memory) before
    its weights load: (prompts, ids, tokenizer). `rows`: KV cache rows of a running batch (None: not
    checked); `specs`: the strategies to run (default: the run's)."""
    from decodebench import limits

    tok = get_tokenizer(run.model, prep["device"], prep["dtype"])
    prompts = load_prompts(run, prep, tok)
    ids = encode_prompts(prompts, tok, bool(run.dataset.chat_template))
    specs = tuple(specs) or (prep["spec"],)
    ids = limits.check(run, run.model, ids, max_new_tokens, rows, prep["device"], prep["dtype"], specs,
                       sum(s.num_return_sequences for s in specs))
    check_negatives(run, prep["spec"], prompts, tok, ids, max_new_tokens)
    return prompts, ids, tok


def check_negatives(run: RunSpec, spec, prompts, tok, ids: dict, max_new_tokens: int) -> None:
    """With a guidance scale, every negative prompt has tokens and leaves room for max_new_tokens in the
    model's positions (it is never cut: dataset.truncate cuts prompts only)."""
    from decodebench import limits

    if spec.params.guidance_scale in (None, 1.0):
        return
    key = "dataset.negative_prompt_column" if run.dataset.negative_prompt_column else "strategy.negative_prompt"
    shape = limits.model_shape(run.model)
    room = shape.max_positions - max_new_tokens if shape and shape.max_positions else None
    reqs = build_requests(prompts, tok, replace(spec, num_return_sequences=1), 0, bool(run.dataset.chat_template),
                          ids, run.dataset.system_prompt)
    for r in reqs:
        n = r.negative_prompt_ids
        if n is not None and not n:
            raise ConfigError(f"{key}: the negative prompt of prompt {r.prompt_id!r} has no tokens; give it text")
        if n is not None and room is not None and len(n) > room:
            raise ConfigError(f"{key}: the negative prompt of prompt {r.prompt_id!r} has {len(n)} tokens, more than "
                              f"the {room} positions max_new_tokens={max_new_tokens} leaves; shorten it")


@dataclass(frozen=True)
class RunPlan:
    """What a run needs before its model loads, checked once (`prepare`): the strategy spec, telemetry
    fields, the dataset's table, the scorer plan, device and dtype. A sweep shares one across its points
    (each point with its own `spec`). Indexing by name (`plan["device"]`) reads the same fields."""

    spec: Any
    record: tuple
    table: Any
    plan: Any  # the ScorerPlan
    device: str
    dtype: str
    task: Any = None  # the checked lm-eval task settings (decodebench/tasks/), or None
    empty_skipped: int = 0  # empty prompts left out (dataset.empty_prompts=skip)
    memory: Any = None  # the run's MemoryMark (its own peak memory), set when generation starts
    gen_lp: Any = None  # GenLogprobs: generation-time log-probs the scorers reuse, set when generation starts

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


def prepare(run: RunSpec, sweep: bool = False) -> RunPlan:
    """All checks that need no model: the strategy, telemetry fields, dataset, scorers, model source.
    `sweep`: for a sweep's base settings (its points may set min_new_tokens above max_new_tokens to get
    full-length rows)."""
    from decodebench.plugins import load_plugins
    from decodebench.scorers import resolve_scorers

    try:
        load_plugins(run.plugins)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    spec = validate(run)
    if not sweep:
        check_min_new_tokens(spec)
    try:
        record = check_fields(list(run.record))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if record and not METHODS.get(spec.method).supports_record:
        raise ConfigError(f"record: strategy method {spec.method!r} has no per-step telemetry; "
                          "set record=[] or choose a sampling strategy")
    if spec.params.negative_prompt is not None and run.dataset.negative_prompt_column is not None:
        raise ConfigError("strategy.negative_prompt: set either it or dataset.negative_prompt_column (one negative "
                          "prompt per row), not both")
    try:
        table = data.load_table(run.dataset)
        skipped = data.empty_rows(table, run.dataset) if run.dataset.prefix_tokens is None else []
    except ValueError as e:
        raise ConfigError(str(e) if isinstance(e, SettingError) else prefix_key("dataset", str(e))) from None
    try:
        plan = resolve_scorers(copy.deepcopy(dict(run.scorers)))
    except ValueError as e:
        raise ConfigError(prefix_key("scorers", str(e))) from None
    if is_api(run.model):  # an endpoint instead of weights (decodebench/api_models/)
        from decodebench.api_models.run import prepare_api

        return prepare_api(run, RunPlan(spec=spec, record=record, table=table, plan=plan, device="cpu",
                                        dtype="float32", empty_skipped=len(skipped)))
    try:
        models.resolve_source(run.model)
        check_scoring_models(plan)  # scorers.<name>.model=...: checked now, loaded after generation
        device = distributed.rank_device(models.pick_device(run.device))
        models.check_load_options(run.model, device)
        if run.compile:
            from decodebench.decoding.engine.compiled import check_compile

            check_compile(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return RunPlan(spec=spec, record=record, table=table, plan=plan, device=device,
                   dtype=models.pick_dtype(run.dtype, device), task=check_task(run, spec),
                   empty_skipped=len(skipped))


def check_task(run: RunSpec, spec):
    """The `task` group's checks (decodebench/tasks/config.py); None without a task."""
    if run.task is None:
        return None  # lm-eval is imported only when a task is used
    from decodebench.tasks.config import check_task as check

    try:
        return check(run.task, spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def encode_prompts(prompts, tok, chat: bool) -> dict[str, list[int]]:
    """prompt id -> token ids (a chat template already holds its special tokens)."""
    return {p.id: tok(p.text, add_special_tokens=not chat)["input_ids"] for p in prompts}


def build_requests(prompts, tok, spec, seed: int, chat: bool, ids: Optional[dict] = None,
                   system_prompt: Optional[str] = None) -> list[Request]:
    """One request per (prompt, sample); `ids` (from encode_prompts) saves tokenizing again. With a
    guidance scale, each row's negative prompt (the dataset's column, else `strategy.negative_prompt`) is
    tokenized as its prompt is, inside the chat template (after `system_prompt`) when `chat`."""
    ids = ids if ids is not None else encode_prompts(prompts, tok, chat)
    text = spec.params.negative_prompt
    if text is not None and chat:
        text = data._apply_chat_template(tok, text, system_prompt)
    cfg_on = spec.params.guidance_scale not in (None, 1.0)
    negs: dict = {}
    reqs = []
    for p in prompts:
        neg = p.negative if p.negative is not None else text
        if cfg_on and neg is not None and neg not in negs:
            negs[neg] = tok(neg, add_special_tokens=not chat)["input_ids"]
        for s in range(spec.num_return_sequences):
            reqs.append(Request(prompt_id=p.id, prompt_ids=list(ids[p.id]), sample_index=s, params=spec.params,
                                seed=seed, negative_prompt_ids=negs.get(neg) if cfg_on else None))
    return reqs


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def load_prompts(run: RunSpec, prep: RunPlan, tok) -> list:
    """The dataset's prompt records (ConfigError when none are left)."""
    try:
        prompts = data.to_prompts(prep.table, run.dataset, tok)
    except ValueError as e:
        raise ConfigError(prefix_key("dataset", str(e))) from None
    if not prompts:
        raise ConfigError("dataset: no prompts left after loading; check dataset.limit and dataset.prefix_tokens")
    return prompts


def run_info(run: RunSpec, prep: RunPlan, spec, prompts: list, num_rows: int, batch_size: int) -> dict:
    """The body of run.json (the applied transform chain is added when generation is done)."""
    return {
        "strategy": spec.describe(), "model": run.model.name_or_path, "device": prep.device,
        "dtype": prep.dtype, "seed": run.seed, "batch_size": int(batch_size),
        "batch_size_setting": str(run.batch_size), "num_prompts": len(prompts), "num_rows": num_rows,
        "empty_prompts_skipped": prep.get("empty_skipped", 0), "engine": engine_options(run),
    }


def engine_options(run: RunSpec) -> dict:
    """The engine's settings from the top-level config (none of them changes a generated token)."""
    return {"continuous": run.continuous, "sync_every": run.sync_every, "compile": run.compile,
            "share_histories": run.share_histories}


def batch_size_for(run: RunSpec, model, reqs: list, spec, scale: int = 1) -> int:
    """`batch_size`, or for `auto` the largest running batch that fits (decoding/engine/driver.py), times
    `scale` (fused sweep points; for `auto`, when those points' rows share their forwards); a batch whose
    KV state cannot fit is a ConfigError naming the bytes."""
    from decodebench.decoding import engine

    cont = run.continuous
    if str(run.batch_size) == "auto":
        device = next(model.parameters()).device
        one_token = METHODS.get(spec.method).unit == "row"  # search methods run their own batches
        shared = scale if one_token and engine.shares_histories(run.share_histories, device, run.compile) else 1
        return engine.auto_batch_size(model, reqs, spec, cont, shared_points=shared)
    bs = int(run.batch_size) * scale
    try:
        engine.check_kv_fits(model, bs, reqs, spec, cont)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return bs


def make_record(req: Request, prompt, out, tok, gen_lp: Optional[GenLogprobs] = None) -> results.GenerationRecord:
    """One line of generations.jsonl: a request, its prompt record and the engine's output."""
    if gen_lp is not None:
        out = gen_lp.take(req, out)
    return results.GenerationRecord(
        prompt_id=req.prompt_id, prompt=prompt.text, prompt_token_ids=req.prompt_ids,
        sample_index=req.sample_index, text=tok.decode(out.token_ids, skip_special_tokens=True),
        token_ids=out.token_ids, num_tokens=len(out.token_ids), finish_reason=out.finish_reason,
        reference=prompt.reference, category=prompt.category, score=out.score, telemetry=out.telemetry,
        extra=dict(out.extra))


def finish_run(run: RunSpec, run_dir: Path, prep: dict, info: dict, stats, writer, prompts: list,
               model, tok, t_start: float) -> dict:
    """Close generations.jsonl, record the applied chain, score, and write metrics.json last."""
    order = {p.id: k for k, p in enumerate(prompts)}
    writer.close(sort_key=lambda r: (order[r["prompt_id"]], r["sample_index"]))
    results.note_kept(f"the generations are complete in {run_dir / results.GENERATIONS} but not scored (score "
                      f"them with: python -m decodebench score generations={run_dir})")
    info["strategy"]["chain"] = stats.chain  # the transforms actually applied, in order
    results.write_json_atomic(run_dir / results.RUN_INFO, info)
    records = results.read_generations(run_dir)
    if prep.get("gen_lp") is not None:
        prep["gen_lp"].attach(records)  # in memory only: the LM scorers skip their forward for these

    metrics = run_metrics(stats, time.perf_counter() - t_start, prep["device"], prep.get("memory"))
    try:
        scoring = scoring_models(prep["plan"].scoring_models(), prep["device"], prep["dtype"])
        metrics.update(prep["plan"].score(records, model=model, tokenizer=tok, device=prep["device"],
                                          seed=run.seed, progress=run.progress, models=scoring))
        if prep.get("task") is not None:  # an lm-eval task's metrics join the run's (decodebench/tasks/run.py)
            from decodebench.tasks.run import evaluate_task

            metrics.update(evaluate_task(run, prep, model, tok, run_dir))
        metrics.update(score_selected(run, run_dir, prep, records, model, tok, scoring))
    except BaseException:
        results.write_json_atomic(run_dir / "metrics.partial.json", metrics)  # keep what was measured
        raise
    metrics["wall_time_s"] = time.perf_counter() - t_start
    (run_dir / "error.json").unlink(missing_ok=True)  # a directory never holds both: metrics.json wins
    results.write_json_atomic(run_dir / results.METRICS, metrics)
    results.note_kept(f"the run is complete in {run_dir} (only its W&B logging may be unfinished)")
    return {"run_dir": str(run_dir), "metrics": metrics, "num_records": len(records),
            "strategy": info["strategy"]["name"]}


def score_selected(run: RunSpec, run_dir: Path, prep: dict, records: list, model, tok, scoring) -> dict:
    """With `strategy.selector`: selected.jsonl (one record per prompt) and its metrics as selected_<m>."""
    search = prep["spec"].search
    if search.get("selector") is None:
        return {}
    from decodebench.selectors import PREFIX, select_records

    lines = [r.to_json() if isinstance(r, results.GenerationRecord) else r for r in records]  # the lines on disk
    chosen = select_records(lines, search, model, tok)
    writer = results.GenerationsWriter(run_dir, name="selected.jsonl")
    writer.write(chosen)
    writer.close()
    m = prep["plan"].score(chosen, model=model, tokenizer=tok, device=prep["device"], seed=run.seed,
                           progress=run.progress, models=scoring)
    return {PREFIX + k: v for k, v in m.items()}


def check_with_model(spec, model) -> None:
    """The method's checks that need the loaded model (its layers, a second model's vocabulary): ConfigError."""
    check = METHODS.get(spec.method).check_model
    if check is not None:
        try:
            check(spec, model)
        except ValueError as e:
            raise ConfigError(f"strategy.{e}") from None


def execute(run: RunSpec, run_dir: str | os.PathLike, prep: Optional[dict] = None) -> dict:
    """Run one configuration into `run_dir`; returns {"run_dir", "metrics", ...}."""
    if is_api(run.model):
        from decodebench.api_models.run import execute as execute_api

        return execute_api(run, run_dir, prep or prepare(run))
    t_start = time.perf_counter()
    prep = prep or prepare(run)
    prep = dc_replace(prep, memory=MemoryMark(prep.device))
    prep = dc_replace(prep, gen_lp=gen_logprobs_for(prep))
    spec = prep["spec"]
    run_dir = Path(run_dir)
    with DirLock(run_dir, "hydra.run.dir"):  # one writer per directory
        prompts, ids, _ = checked_prompts(run, prep, rows_per_forward(run), spec.max_new_tokens)
        resume.check_same_run(run_dir, run.settings())
        preemption.note_resume("hydra.run.dir", str(run_dir))
        results.write_text(run_dir / "config.yaml", run.to_yaml())
        results.note_kept(f"{run_dir} holds only config.yaml; nothing was generated yet")
        model, tok = get_model(run.model, prep["device"], prep["dtype"])
        return _generate_and_finish(run, run_dir, prep, prompts, ids, model, tok, t_start)


def _generate_and_finish(run: RunSpec, run_dir: Path, prep: dict, prompts, ids, model, tok, t_start: float) -> dict:
    spec = prep["spec"]
    check_with_model(spec, model)  # limits a method reads from the model (layers, a second model's vocabulary)
    reqs = build_requests(prompts, tok, spec, run.seed, bool(run.dataset.chat_template), ids,
                          run.dataset.system_prompt)
    by_id = {p.id: p for p in prompts}
    keep, todo = resume.split_done(run_dir, reqs)  # a run started again in its directory: the missing rows
    bs = batch_size_for(run, model, todo or reqs, spec)
    info = run_info(run, prep, spec, prompts, len(reqs), bs)
    info["resumed_rows"] = len(keep)
    results.write_json_atomic(run_dir / results.RUN_INFO, info)

    writer = resume.ResumeWriter(run_dir, keep) if keep else results.GenerationsWriter(run_dir)
    results.note_kept(f"the finished rows are in {writer.partial}; metrics.json was not written")

    def on_batch(idx, outs):
        writer.write([make_record(todo[i], by_id[todo[i].prompt_id], o, tok, prep["gen_lp"])
                      for i, o in zip(idx, outs)])

    stats = BatchStats()
    with _progress(len(todo), run.progress, f"{spec.name}") as bar:
        if todo:
            _, stats = distributed.generate(model, tok, todo, spec, model_cfg=run.model, dtype=prep["dtype"],
                                            plugins=run.plugins, batch_size=bs,
                                            record=record_fields(prep), progress=bar, on_batch=on_batch,
                                            **engine_options(run))
    return finish_run(run, run_dir, prep, info, stats, writer, prompts, model, tok, t_start)


def machine_line(res: dict) -> str:
    return json.dumps(results.clean({"run_dir": res["run_dir"], "metrics": res["metrics"]}), sort_keys=True)
