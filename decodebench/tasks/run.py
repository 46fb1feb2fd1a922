"""An lm-eval task inside a decodebench run: the run's model and strategy answer the task's questions.

Called by the runner for a plain run, every job of a multirun and every point of a `sweep`, after the
run's own scorers and before metrics.json is written; the task's metrics join the run's. The task's
per-document samples go to `task_samples.jsonl` in the run directory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path


from decodebench.tasks import metrics as tm_metrics
from decodebench.tasks.config import TaskPlan, offline_env, task_manager

log = logging.getLogger("decodebench")
SAMPLES = "task_samples.jsonl"


@contextlib.contextmanager
def quiet_lm_eval():
    """lm-eval logs every step at INFO/WARNING (custom datasets, seeds, gen_kwargs): keep our output readable."""
    lg = logging.getLogger("lm_eval")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def load_tasks(plan: TaskPlan):
    """lm-eval's {"tasks", "groups"} for the plan, with decodebench's settings applied to each task."""
    t = plan.cfg
    tm, _ = _manager(plan)
    loaded = tm.load([t.name])
    gen_kwargs = copy.deepcopy(dict(t.gen_kwargs)) if t.gen_kwargs else {}
    for task in loaded["tasks"].values():
        if task.get_config("output_type") == "generate_until" and gen_kwargs:
            task.set_config(key="generation_kwargs", value=gen_kwargs, update=True)
        if t.num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=int(t.num_fewshot))
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        # N samples of every question in one request each: the engine gets them all in one call
        task.set_config(key="repeats", value=int(t.num_samples))
        task.set_fewshot_seed(seed=1234)  # lm-eval's default few-shot seed, so prompts match its CLI
    return loaded


def _manager(plan: TaskPlan):
    from decodebench.tasks.config import find_task

    return find_task(plan.cfg.name, plan.include)


def evaluate_task(run, prep: dict, model, tok, run_dir) -> dict:
    """Run the planned task with this run's (a RunSpec's) model and strategy; its metrics, for metrics.json."""
    plan: TaskPlan = prep.get("task")
    if plan is None:
        return {}
    offline_env()
    from lm_eval.evaluator import evaluate

    from decodebench.tasks.lm import DecodebenchLM

    t = plan.cfg
    strategy = copy.deepcopy(dict(run.strategy))
    lm = DecodebenchLM(model=model, tokenizer=tok, strategy=strategy, seed=run.seed,
                       batch_size=str(run.batch_size), progress=run.progress)
    env = {"HF_ALLOW_CODE_EVAL": "1"} if t.allow_code_execution else {}
    with quiet_lm_eval(), _env(env):
        loaded = load_tasks(plan)
        res = evaluate(lm=lm, task_dict=loaded, limit=t.limit, log_samples=True,
                       apply_chat_template=bool(t.apply_chat_template),
                       confirm_run_unsafe_code=bool(t.allow_code_execution))
    out = tm_metrics.lm_eval_metrics(res)
    samples = res.get("samples", {})
    for name, task in loaded["tasks"].items():
        if task.get_config("output_type") != "generate_until" or name not in samples:
            continue
        if t.num_samples > 1 and name not in plan.unsafe:  # code tasks: pass@k, not a vote over programs
            out.update(tm_metrics.maj_at_n(name, task, samples[name], int(t.num_samples)))
        if name in plan.unsafe:
            from functools import partial

            from decodebench.tasks.sandbox import run_program

            run = partial(run_program, timeout_s=float(t.code_timeout_s), memory_mb=int(t.code_memory_mb))
            out.update(tm_metrics.pass_at_ks(name, task, samples[name], list(t.pass_k), run))
    write_samples(Path(run_dir), samples)
    return out


@contextlib.contextmanager
def _env(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_samples(run_dir: Path, samples: dict) -> None:
    """Per document and filter: the prompt, the target, every response and the score (lm-eval's log)."""
    keep = ("doc_id", "filter", "target", "resps", "filtered_resps", "arguments")
    with open(run_dir / SAMPLES, "w", encoding="utf-8") as f:
        for task, rows in samples.items():
            for s in rows:
                rec = {"task": task, **{k: s[k] for k in keep if k in s}}
                rec.update({m: s[m] for m in s.get("metrics", []) if m in s})
                f.write(json.dumps(rec, default=str) + "\n")


__all__ = ["evaluate_task", "load_tasks", "task_manager"]
