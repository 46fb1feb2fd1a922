"""The study command: every method of conf/study/<name>.yaml on the same prompts, in one process.

    python -m decodebench study=open_ended [dataset.limit=8] [strategy.max_new_tokens=16] [study.dir=PATH]
                                           [study.select.metric=...] [study.noise=independent] [any run override]

Writes under the study directory (default outputs/studies/<date>/<time>-<name>):

    study.json                 the methods, the points, the fingerprint of the shared settings
    <method>,<setting>,seed=S/ e.g. topp,top_p=0.95,seed=0: exactly a run directory (+ study_scores.json)
    study_result.json          the split, every point's dev and test objective, each method's choice
    leaderboard.md .csv .html  one row per method at its chosen setting, the full grid below, the plots

Started again with the same `study.dir`, it skips complete points and finishes the others (resume). Bad
input is one line on stderr naming the study file and key, exit 2, before the model loads; exit 1 when a
point failed; 130 when interrupted. The last stdout line is JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NoReturn, Optional

from decodebench import results, runner
from decodebench.cli import preflight
from decodebench.config import ConfigError
from decodebench.registry import did_you_mean

log = logging.getLogger("decodebench")


def _fail(msg: str, code: int = 2) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def wants_study(argv: list[str]) -> bool:
    """The command line chooses a study (`study=<name>`): the study command runs it."""
    return any(a.lstrip("+").startswith("study=") and a.split("=", 1)[1] not in ("", "null") for a in argv)


def check_args(argv: list[str]) -> Optional[str]:
    for a in argv:
        if a in ("-m", "--multirun"):
            return ("study: -m/--multirun is Hydra's multirun; a study runs its methods in one process "
                    "(give study=<name> alone)")
        if a.split("=", 1)[0].startswith("hydra.") and not a.startswith("hydra.searchpath="):
            return f"study: {a.split('=', 1)[0]} is a Hydra setting; set the study's directory with study.dir=PATH"
    name = next(a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("study="))
    opts = preflight.group_options("study", preflight.user_dirs(argv))
    if name not in opts:
        return did_you_mean("study (set study=<name>)", name, opts)
    return None


def study_path(argv: list[str]) -> str:
    name = next(a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("study="))
    from decodebench.config import conf_dir

    for d in [*(preflight.user_dirs(argv) or []), conf_dir()]:
        f = Path(d) / "study" / f"{name}.yaml"
        if f.is_file():
            return str(f)
    return f"study {name}"


def planner(argv: list[str]):
    """`prepare(spec) -> (RunPlan, StudyPlan)` for the preflight: a method's spec is the command line's,
    composed again with strategy=<its strategy>."""
    from decodebench.specs import to_specs
    from decodebench.sweep.study_plan import make_study

    overrides, _ = preflight._flag_free(argv)
    overrides = preflight.search_path(argv) + [a for a in preflight.add_grid_keys(overrides)
                                               if not a.lstrip("+").startswith("strategy=")]
    strategies = preflight.group_options("strategy", preflight.user_dirs(argv))

    def compose_method(strategy: str):
        return to_specs(preflight._compose(overrides + [f"strategy={strategy}"]))

    def prepare(run):
        prep = runner.prepare(run)  # first: it loads plugins, whose transforms a method may use
        return prep, make_study(run, compose_method, strategies, prep["plan"].metric_names, study_path(argv))

    return prepare


def summarize(res: dict) -> str:
    lines = [f"study {res['name']}: {res['points']} points: {len(res['complete'])} run, {res['skipped']} already "
             f"complete, {len(res['failed'])} failed, in {res['wall_time_s']:.1f} s"]
    lines += [f"  failed: {f['point']}: {f['error']}" for f in res["failed"]]
    lines += [f"  {c['method']}: chose {c['setting']}, test {c['test']:.4g}" for c in res["choices"]]
    if res["leaderboard"]:
        lines.append(f"leaderboard: {res['leaderboard']['markdown']}")
    lines.append(f"results: {res['study_dir']}")
    return "\n".join(lines)


def main(argv: list[str]) -> dict:
    from decodebench.sweep.study_run import default_dir, run_study

    logging.getLogger("decodebench").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    err = check_args(argv)
    if err:
        _fail(err)
    _, prepared, err = preflight.prepare_checked(argv, prepare=planner(argv))
    if err:
        _fail(err)
    prep, splan = prepared
    study = splan.run.study
    where = Path(str(study.dir)) if study.dir else default_dir(splan.name)
    err = results.check_writable_dir("study.dir", where)
    if err:
        _fail(err)
    try:
        res = run_study(splan, where, prep)
    except ConfigError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print(f"\nstudy interrupted; finished rows and points are kept. Resume with the same command and "
              f"study.dir={where}", file=sys.stderr)
        sys.exit(130)
    print(summarize(res))
    print(json.dumps({k: res[k] for k in ("study_dir", "points", "complete", "failed", "skipped", "leaderboard",
                                          "choices")}), flush=True)
    if res["failed"]:
        sys.exit(1)
    return res
