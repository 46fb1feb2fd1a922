"""`decodebench-lm-eval`: lm-eval's own command line, with `--model decodebench` known to it.

    decodebench-lm-eval run --model decodebench --model_args strategy=minp,min_p=0.1 --tasks decodebench_arith

lm-eval 0.4.x resolves `--model` in its built-in registry before any user code runs and has no plugin hook
for models, so decodebench registers itself and then hands the arguments to lm-eval unchanged. decodebench's
own tasks are added to the task search path (as if `--include_path` named them).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from decodebench.tasks import TASKS_DIR, register_model
    from decodebench.tasks.config import offline_env

    offline_env()  # a Hub task offline fails at once instead of waiting on connection retries
    register_model()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args and any(
            a in ("--tasks", "-t") or a.startswith("--tasks=") for a in args):
        args += ["--include_path", str(TASKS_DIR)]
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
