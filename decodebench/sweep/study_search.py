"""`study.search=optuna`: Optuna's TPE sampler per method, the same number of trials for every tuned method,
rounds fused across methods, trials stored in the study directory so a killed study resumes.

    methods:
      topp: {strategy: topp, grid: {top_p: {low: 0.5, high: 0.99}}}          # a range: a float (or int) search
      topk: {strategy: topk, grid: {top_k: {low: 5, high: 200, log: true}}}  # log scale
      minp: {strategy: minp, grid: {min_p: [0.02, 0.05, 0.1]}}               # a list: categorical

A method's grid keys are its search space: a list is Optuna's CategoricalDistribution, `{low, high[, log]}` a
FloatDistribution (an IntDistribution for an integer parameter). Each method is its own Optuna study
(named by its label) in one JournalStorage file, `<study.dir>/optuna.journal`.

A round asks one trial of every tuned method (ask-and-tell), runs all their points (and, in the first round,
the untuned methods' points) through the sweep's executor, so one-token-per-step points of every method share
one running batch, then tells each trial its objective: `study.select`'s metric on the dev prompts, the mean
over `study.seeds`. Reporting stays on the test prompts (study_run.score_and_select).

Reproducible and resumable: trial n of method m is asked with a TPESampler seeded by sha256(seed, m, n), so it
depends on the seed and the trials told before it only, never on a sampler's state in memory. After a kill, a
trial left RUNNING is evaluated again with its own parameters (its points' rows on disk are kept, complete
points are skipped), and the trials finished are never asked again: a resumed study asks exactly the trials an
uninterrupted one would. A sampled float is rounded to 4 significant digits, so a point's directory name is its
setting. A trial whose parameters repeat an earlier trial's reuses that point (it still counts as a trial).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from decodebench.config import ConfigError, StrategyConfig
from decodebench.specs import RunSpec

SEARCHES = ("grid", "optuna")
JOURNAL = "optuna.journal"
RANGE_KEYS = ("low", "high", "log")


@dataclass(frozen=True)
class Range:
    """A numeric search range of one parameter: [low, high], on a log scale if `log`."""

    low: float
    high: float
    log: bool
    integer: bool

    def distribution(self):
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def ends(self) -> list:
        """The values checked before the model loads (a range is valid iff both ends are)."""
        return [self.low, self.high]


Space = Union[list, Range]


def _is_int_param(key: str) -> bool:
    types = {f.name: str(f.type) for f in dataclasses.fields(StrategyConfig)}
    t = types.get(key, "")
    return "int" in t and "float" not in t


def check_range(where: str, vals: dict) -> Range:
    """`{low, high[, log]}` -> Range; one line naming the key on anything wrong."""
    for k in vals:
        if k not in RANGE_KEYS:
            raise ConfigError(f"{where}.{k}: not a range key; a range is {{low: L, high: H}} (and log: true)")
    if "low" not in vals or "high" not in vals:
        raise ConfigError(f"{where}: a range needs both low and high, got {vals!r}")
    low, high, log = vals["low"], vals["high"], vals.get("log", False)
    integer = _is_int_param(where.rsplit(".", 1)[-1])
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{where}.{name} must be {kind}, got {v!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low={low}, high={high}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low={low}")
    return Range(low, high, log, integer)


def check_choices(where: str, vals: list) -> None:
    """Optuna's categorical choices are None, bool, int, float or str."""
    for v in vals:
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise ConfigError(f"{where}: with study.search=optuna a listed value must be a number, string, bool or "
                              f"null (a categorical choice), got {v!r}")


@dataclass
class Search:
    """What the optuna search needs once the model is loaded: the spaces, the methods' specs, the budget."""

    trials: int  # per tuned method
    seed: int  # the study's seed: the samplers' seeds derive from it
    spaces: dict[str, dict[str, Space]]  # tuned method label -> parameter -> space
    runs: dict[str, RunSpec]  # method label -> its composed spec (the study's command line + strategy=)
    seeds: list[int]  # study.seeds (each trial runs one point per seed)
    noise: str  # study.noise
    file: str  # the study file, for error lines

    def startup(self) -> int:
        """TPE's random start-up trials: Optuna's 10, or a third of a smaller budget (at least 2)."""
        return min(10, max(2, self.trials // 3))

    def sampler_seed(self, label: str, number: int) -> int:
        h = hashlib.sha256(f"{self.seed}:{label}:{number}".encode()).digest()
        return int.from_bytes(h[:4], "little") & 0x7FFFFFFF

    def space_key(self, label: str) -> str:
        return json.dumps(space_json(self.spaces[label]), sort_keys=True)

    def describe(self) -> dict:
        return {"search": "optuna", "sampler": "TPE", "trials": self.trials, "startup_trials": self.startup(),
                "journal": JOURNAL}


def space_json(grid: dict[str, Space]) -> dict:
    """A method's grid as study.json records it (a range as {low, high, log, integer})."""
    return {k: dataclasses.asdict(v) if isinstance(v, Range) else v for k, v in grid.items()}


def probe_grid(grid: dict[str, Space]) -> dict[str, list]:
    """A grid of the values to validate before the model loads: every listed value, both ends of a range."""
    return {k: v.ends() if isinstance(v, Range) else list(v) for k, v in grid.items()}


def check_trials(run: RunSpec, file: str) -> int:
    n = run.study.trials
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{file}: study.trials must be an integer >= 1 (Optuna trials per tuned method), got {n!r}")
    return n


def check_search(run: RunSpec, file: str, grids: dict[str, dict]) -> str:
    """study.search is grid or optuna; a range is only searched by optuna. Returns the search."""
    search = str(run.study.search)
    if search not in SEARCHES:
        raise ConfigError(f"{file}: study.search must be grid (every grid point) or optuna (TPE, study.trials "
                          f"per method), got {search!r}")
    if search == "grid":
        for label, grid in grids.items():
            for k, v in grid.items():
                if isinstance(v, Range):
                    raise ConfigError(f"{file}: study.methods.{label}.grid.{k}: a range {{low, high}} needs "
                                      f"study.search=optuna; give a list of values for a grid")
    else:
        check_trials(run, file)
        for label, grid in grids.items():
            for k, v in grid.items():
                if isinstance(v, list):
                    check_choices(f"{file}: study.methods.{label}.grid.{k}", v)
    return search


# ---- running, with the model loaded ------------------------------------------------------------------------


def open_studies(sdir: Path, search: Search, maximize: bool) -> dict:
    """One Optuna study per tuned method in the journal; refuses a journal over another search space."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # decodebench logs each round itself
    storage = JournalStorage(JournalFileBackend(str(sdir / JOURNAL)))
    out = {}
    for label in search.spaces:
        study = optuna.create_study(study_name=label, storage=storage, load_if_exists=True,
                                    direction="maximize" if maximize else "minimize")
        was = study.user_attrs.get("space")
        if was is None:
            study.set_user_attr("space", search.space_key(label))
        elif was != search.space_key(label) or study.direction.name != ("MAXIMIZE" if maximize else "MINIMIZE"):
            raise ConfigError(f"study.dir {sdir}: its Optuna trials of method {label} searched another space or "
                              f"direction ({was}); use a new study.dir")
        out[label] = study
    return out


def ask(study, search: Search, label: str):
    """The next trial of one method, with a sampler seeded by its number (reproducible across resumes)."""
    import optuna

    number = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=search.sampler_seed(label, number),
                                               n_startup_trials=search.startup())
    dists = {k: v.distribution() if isinstance(v, Range) else optuna.distributions.CategoricalDistribution(v)
             for k, v in search.spaces[label].items()}
    return study.ask(dists)


def trial_values(search: Search, label: str, params: dict) -> dict:
    """A trial's parameters as a point's grid values (floats of a range rounded to 4 significant digits)."""
    out = {}
    for k, space in search.spaces[label].items():
        v = params[k]
        if isinstance(space, Range) and not space.integer:
            v = float(f"{v:.4g}")
        out[k] = v
    return out


def pending(studies: dict, search: Search) -> dict:
    """label -> the trial to evaluate this round: one left RUNNING by a kill, else a new one while the method
    has fewer than study.trials finished trials."""
    from optuna.trial import TrialState

    out = {}
    for label, study in studies.items():
        trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if running:
            out[label] = running[0]
        elif sum(t.state.is_finished() for t in trials) < search.trials:
            out[label] = ask(study, search, label)
    return out


def tell(study, trial, value: Optional[float]) -> None:
    """The trial's dev objective; FAIL when no point of it finished or the objective is NaN."""
    from optuna.trial import TrialState

    if value is None or value != value:
        study.tell(trial.number, state=TrialState.FAIL)
    else:
        study.tell(trial.number, value)


def trial_log(studies: dict) -> dict:
    """label -> its trials in order: number, state, params, value (for study_result.json and the tests)."""
    return {label: [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value}
                    for t in s.get_trials(deepcopy=False)] for label, s in studies.items()}


def mean_dev(scores: list[Any]) -> Optional[float]:
    vals = [float(s) for s in scores if s is not None and s == s]
    return sum(vals) / len(vals) if vals else None

