"""The `task` config group (conf/task/lm_eval.yaml) and every check on it that needs no model.

`task=<lm-eval task name>` on the command line becomes `task=lm_eval task.name=<name>` (`expand_overrides`),
so any task lm-eval knows, or one in `task.include_path`, can be named directly.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from decodebench.tasks import TASKS_DIR

CONF_TASK = Path(__file__).resolve().parent.parent.parent / "conf" / "task"
# lm-eval metrics that are better lower; every other task metric (accuracy, exact match, pass@k, F1, BLEU,
# ROUGE, maj@N) is better higher
LOWER_IS_BETTER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter"}


@dataclass
class TaskConfig:
    """Hydra schema of the `task` group: an lm-eval task scored for every run (README, "Tasks")."""

    name: str = MISSING  # lm-eval task, group or tag name (decodebench_arith ships with decodebench)
    limit: Optional[int] = None  # the first N documents only (lm-eval's --limit; a count, not a fraction)
    num_fewshot: Optional[int] = None  # null: the task's own setting
    num_samples: int = 1  # samples per question, in one engine call; > 1 adds maj@N (and pass@k on code tasks)
    include_path: Optional[str] = None  # a directory of your own task YAMLs (lm-eval's --include_path)
    allow_code_execution: bool = False  # code tasks run model-written code to score it: opt in here
    pass_k: List[int] = field(default_factory=lambda: [1])  # k values of pass@k (each <= num_samples)
    gen_kwargs: Dict[str, Any] = field(default_factory=dict)  # lm-eval's --gen_kwargs (e.g. max_gen_toks)
    apply_chat_template: bool = False
    code_timeout_s: float = 10.0  # per program
    code_memory_mb: int = 1024  # address-space limit per program


@dataclass
class TaskPlan:
    """A checked task config: what `run.evaluate_task` needs."""

    cfg: TaskConfig
    include: list[str]  # task directories searched before lm-eval's own
    output_types: dict[str, str]  # leaf task -> output_type
    unsafe: list[str]  # leaf tasks that execute model-written code


def expand_overrides(args: list[str]) -> list[str]:
    """`task=gsm8k` -> `task=lm_eval task.name=gsm8k` (also `task=a,b` in a multirun); other args unchanged."""
    shipped = {p.stem for p in CONF_TASK.glob("*.yaml")}
    out = []
    for a in args:
        key, _, val = a.partition("=")
        if key.lstrip("+") == "task" and val and not set(val.split(",")) <= shipped:
            out += [f"{key}=lm_eval", f"task.name={val}"]
        else:
            out.append(a)
    return out


def local_paths(include_path: Optional[str]) -> list[str]:
    paths = [str(TASKS_DIR)]
    if include_path:
        paths.append(str(Path(include_path).expanduser().resolve()))
    return paths


@functools.lru_cache(maxsize=4)
def task_manager(include: tuple[str, ...], defaults: bool):
    """lm-eval's task index (all of lm-eval's YAMLs take ~8 s to index: built once per process)."""
    offline_env()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include), include_defaults=defaults)


def find_task(name: str, include: list[str]):
    """(TaskManager, local?) for the index that knows `name`: decodebench's and the user's first (fast)."""
    tm = task_manager(tuple(include), False)
    if name in tm.all_tasks:
        return tm, True
    full = task_manager(tuple(include), True)
    if name in full.all_tasks:
        return full, False
    import difflib

    close = difflib.get_close_matches(name, full.all_tasks, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown task {name!r}{hint} ({len(full.all_tasks)} known: `lm_eval ls tasks`; "
                     f"your own YAMLs: task.include_path=DIR)")


def leaf_entries(tm, name: str) -> list:
    """Index entries of the tasks a name stands for (a group's or tag's members, recursively)."""
    from lm_eval.tasks._index import Kind

    out, todo, seen = [], [name], set()
    while todo:
        n = todo.pop()
        if n in seen or n not in tm.task_index:
            continue
        seen.add(n)
        e = tm.task_index[n]
        if e.kind in (Kind.TASK, Kind.PY_TASK):
            out.append(e)
        elif e.kind == Kind.TAG:
            todo += [k for k, v in tm.task_index.items() if n in getattr(v, "tags", ())]
        else:
            members = (e.cfg or {}).get("task") or []
            todo += [m if isinstance(m, str) else m.get("task") for m in members if m]
    return out


def offline_env() -> None:
    """lm-eval would otherwise wait on the Hub for every dataset and metric it touches."""
    from decodebench.models import hub_offline

    if hub_offline():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


_WARNED: set = set()


def warn_once(msg: str) -> None:
    """Preflight and the run check the same config: say it once per process."""
    if msg not in _WARNED:
        _WARNED.add(msg)
        logging.getLogger("decodebench").warning(msg)


def check_task(t: Optional[TaskConfig], spec) -> Optional[TaskPlan]:
    """All task checks before any model loads; ValueError with one line (the caller prefixes nothing).
    `t`: the run's task settings (RunSpec.task), None without a task."""
    if t is None:
        return None
    if t.num_samples < 1:
        raise ValueError(f"task.num_samples must be >= 1, got {t.num_samples}")
    if t.limit is not None and t.limit < 1:
        raise ValueError(f"task.limit must be >= 1 (a number of documents), got {t.limit}")
    if t.num_fewshot is not None and t.num_fewshot < 0:
        raise ValueError(f"task.num_fewshot must be >= 0, got {t.num_fewshot}")
    if any(k < 1 or k > t.num_samples for k in t.pass_k):
        raise ValueError(f"task.pass_k values must be in [1, task.num_samples={t.num_samples}], got "
                         f"{list(t.pass_k)}; raise task.num_samples")
    if t.include_path and not Path(t.include_path).expanduser().is_dir():
        raise ValueError(f"task.include_path: no such directory {t.include_path!r}")
    include = local_paths(t.include_path)
    tm, local = find_task(t.name, include)
    entries = leaf_entries(tm, t.name)
    types = {e.name: (e.cfg or {}).get("output_type", "generate_until") for e in entries}
    unsafe = [e.name for e in entries if (e.cfg or {}).get("unsafe_code")]
    if unsafe and not t.allow_code_execution:
        raise ValueError(f"task {t.name!r} scores by running model-written code; set "
                         f"task.allow_code_execution=true to allow it (subprocess, time and memory limits, "
                         f"no network, temporary directory)")
    scored = sorted(n for n, ty in types.items() if ty != "generate_until")
    if scored and (spec.params.do_sample or spec.method != "sampling"):
        raise ValueError(f"task {t.name!r}: {scored[0]} is scored by log-likelihood "
                         f"({types[scored[0]]}), which strategy {spec.name!r} does not change; choose a "
                         f"generate_until task, or strategy=greedy to score it once")
    if t.num_samples > 1 and not spec.params.do_sample and spec.method == "sampling":
        warn_once(f"task.num_samples={t.num_samples} with strategy {spec.name!r}: greedy samples are all "
                  f"the same, so maj@{t.num_samples} equals one sample's score; choose a sampling strategy")
    from decodebench.models import hub_offline

    if not local and hub_offline():
        raise ValueError(f"task {t.name!r} loads its data from the Hugging Face Hub, which is unreachable "
                         f"(offline); put a task YAML with local data in a directory and set "
                         f"task.include_path=DIR (see decodebench/tasks/lm_eval_tasks/)")
    return TaskPlan(cfg=t, include=include, output_types=types, unsafe=unsafe)
