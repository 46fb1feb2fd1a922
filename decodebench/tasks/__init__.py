"""lm-evaluation-harness both ways.

- decodebench as an lm-eval model (`lm.py`): `lm_eval` runs its tasks through decodebench's engine.
- lm-eval tasks inside decodebench runs and sweeps (`run.py`): `task=<name>` adds a task's metrics to
  every run's metrics.json.

lm-eval is imported only when a task is used: a plain decodebench run never pays for it.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "decodebench"
# decodebench's own lm-eval tasks (YAML + local data): always on the task search path, never downloaded
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"


def register_model() -> None:
    """Make `decodebench` an lm-eval model name (lazily: the class loads when lm-eval first asks for it)."""
    import lm_eval.models  # noqa: F401 - fills lm-eval's own registry first; it is skipped once non-empty
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target="decodebench.tasks.lm:DecodebenchLM")
