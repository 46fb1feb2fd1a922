"""The verbs in front of Hydra: run (default), sweep, score, report.

    python -m decodebench [run] [overrides...]
    python -m decodebench strategy=topp sweep [overrides...]
    python -m decodebench score generations=PATH [overrides...]
    python -m decodebench report PATH [PATH...]

Bad input ends with one line on stderr naming the key and what to change, and exit code 2, before any
model loads.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

VERBS = ("run", "sweep", "score", "report")


def split_verb(argv: list[str]) -> tuple[str, list[str]]:
    """The first bare word that names a verb is the verb, wherever it stands; the rest are Hydra's."""
    for i, a in enumerate(argv):
        if a in VERBS:
            return a, argv[:i] + argv[i + 1:]
    return "run", argv


# Open-ended maps: keys here are chosen by the user (a plugin transform's parameter, a scorer option),
# so an override may add them; Hydra wants "++" for that, which nobody should have to remember.
OPEN_KEYS = ("strategy.extra.", "scorers.")


def open_keys(args: list[str]) -> list[str]:
    return [f"++{a}" if a.startswith(OPEN_KEYS) and "=" in a else a for a in args]


def fail(msg: str) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Every verb ends in one line on stderr when it does not succeed: bad input (exit 2), a file that cannot
    be written (exit 1, naming the path), Ctrl-C (exit 130, saying what was kept), SIGTERM or SIGUSR1 (exit
    143, saying what was kept and the command that resumes: decodebench/preemption.py)."""
    from decodebench import preemption, results

    argv = list(sys.argv[1:] if argv is None else argv)
    verb, rest = split_verb(argv)
    preemption.set_command(argv)
    try:
        from decodebench.tasks.config import expand_overrides

        from decodebench.cli.study import wants_study

        name = "study" if verb == "run" and wants_study(rest) else verb
        with preemption.preemptible(name, results.kept):  # SIGTERM/SIGUSR1: keep every finished row, say so, exit 143
            # task=<lm-eval task name> -> task=lm_eval task.name=<name>
            return dispatch(verb, expand_overrides(open_keys(rest)))
    except KeyboardInterrupt:
        from decodebench.results import kept

        print(f"\n{verb} interrupted; {kept()}", file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as e:
        from decodebench.results import os_error_line

        print(f"error: {os_error_line(e)}", file=sys.stderr, flush=True)
        sys.exit(1)


def dispatch(verb: str, rest: list[str]) -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    from decodebench.cli import preflight

    if verb == "report":
        from decodebench.report import main as report_main

        return report_main(rest)
    if verb == "score":
        from decodebench.cli.score import main as score_main

        return score_main(rest)
    from decodebench import distributed

    # under torchrun, rank 0 runs the verb and the other ranks serve its generate calls (distributed.py)
    return distributed.launch(lambda: _generate_verb(verb, rest), distributed.device_arg(rest))


def _generate_verb(verb: str, rest: list[str]):
    from decodebench.cli import preflight

    from decodebench.cli.study import wants_study

    if verb == "run" and wants_study(rest):  # study=<name>: every method of conf/study/<name>.yaml (cli/study.py)
        from decodebench.cli.study import main as study_main

        return study_main(rest)
    if verb == "sweep":  # its own preflight: it plans the grid too
        from decodebench.sweep.verb import main as sweep_main

        return sweep_main(rest)
    if not os.environ.get("DECODEBENCH_NO_PREFLIGHT"):
        cfg, prepared, err = preflight.prepare_checked(rest)
        if err:
            fail(err)
        preflight.hand_over(cfg, prepared)
    from decodebench.cli.entry import main as hydra_main

    sys.argv = [sys.argv[0]] + rest
    hydra_main()

if __name__ == "__main__":
    main()
