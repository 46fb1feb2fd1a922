"""A study's plan, made before any model loads: its methods, every method's points, fusion across methods.

    study:                                  # conf/study/<name>.yaml (`# @package _global_`)
      select: {metric: coherence, direction: max}
      dev_fraction: 0.5
      methods:                              # label -> one method; adding a method is one entry
        greedy: {strategy: greedy}
        topp: {strategy: topp, settings: {temperature: 1.0}, grid: {top_p: [0.8, 0.9, 0.95]}}

A method's point config is what `python -m decodebench <the study's command line> strategy=<strategy>
strategy.<k>=<v>... seed=<s>` composes: the study's shared settings (dataset, scorers, max_new_tokens) and
the command line apply to every method. Points of one-token-per-step methods with the same loop-level
settings share one fusion key whatever their strategy (`plan.fuse_key`), so they run in one batch; the
search methods get groups of their own. With `noise: independent` a method's seed is salted by its label.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from decodebench.config import ConfigError, StrategyConfig, check_seed, conf_dir, validate
from decodebench.specs import RunSpec, with_strategy
from decodebench.sweep.plan import NOT_FINGERPRINTED, NOT_PARAMS, Plan, Point, _first_duplicate, fuse_key, point_name
from decodebench.sweep.study_search import Search, check_range, check_search, probe_grid

STUDY_JSON = "study.json"
METHOD_KEYS = ("strategy", "settings", "grid")
NOISE = ("shared", "independent")
DIRECTIONS = {"max": True, "min": False}


@dataclass
class Method:
    label: str  # the key under study.methods
    strategy: str  # a conf/strategy option
    settings: dict[str, Any]  # fixed strategy parameters
    grid: dict[str, list]  # strategy parameter -> values (empty: one point)

    @property
    def size(self) -> int:
        n = 1
        for v in self.grid.values():
            n *= len(v)
        return n


@dataclass
class StudyPlan:
    run: RunSpec  # the base settings
    name: str
    file: str  # the study file, for error lines
    methods: list[Method]
    points: list[Point]
    method_of: dict[str, str]  # point name -> method label
    metric: str
    maximize: bool
    fingerprint: str
    base: dict
    search: Any = None  # study_search.Search with study.search=optuna: the points are asked round by round

    def sweep_plan(self) -> Plan:
        """The points as the sweep's executor takes them (fusion groups across methods)."""
        return Plan(self.run, "study", {}, sorted({p.seed for p in self.points}), self.points, self.fingerprint,
                    self.base)

    def methods_by_label(self) -> dict[str, Method]:
        return {m.label: m for m in self.methods}

    def label(self, p: Point) -> str:
        """The leaderboard's row label: the method and every setting that makes it (`topp: top_p=0.95`)."""
        m = self.methods_by_label()[self.method_of[p.name]]
        shown = {**m.settings, **p.values}
        return m.label + (": " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()) if shown else "")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def study_file(run: RunSpec, dirs: Optional[list[Path]] = None) -> str:
    """Where the chosen study file lives (the user's config dirs first), for error lines."""
    name = str(run.choices.get("study") or run.study.name)
    for d in [*(dirs or []), conf_dir()]:
        f = Path(d) / "study" / f"{name}.yaml"
        if f.is_file():
            return str(f)
    return f"study {name}"


def _params() -> list[str]:
    return [f.name for f in dataclasses.fields(StrategyConfig) if f.name not in NOT_PARAMS]


def _check_key(where: str, key: str, params: list[str], strategy: str) -> None:
    if key == "seed":
        raise ConfigError(f"{where}.seed: seeds are not a method setting; set study.seeds=[0,1]")
    if key not in params:
        close = difflib.get_close_matches(key, params, n=2)
        hint = f"did you mean {' or '.join(close)}?" if close else "see StrategyConfig in decodebench/config.py"
        raise ConfigError(f"{where}.{key}: strategy {strategy} has no parameter {key!r}; {hint}")


def parse_methods(raw: Any, file: str, strategies: list[str]) -> list[Method]:
    """study.methods -> Methods; one line naming the file and the key on anything wrong."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{file}: study.methods is empty; list at least one method, e.g. "
                          f"study.methods.greedy={{strategy: greedy}}")
    params, out = _params(), []
    for label, m in raw.items():
        where = f"{file}: study.methods.{label}"
        m = {"strategy": m} if isinstance(m, str) else m
        if not isinstance(m, dict):
            raise ConfigError(f"{where} must be a mapping with {', '.join(METHOD_KEYS)}; got {m!r}")
        for k in m:
            if k not in METHOD_KEYS:
                close = difflib.get_close_matches(str(k), METHOD_KEYS, n=1)
                hint = f"did you mean {close[0]}?" if close else f"a method has {', '.join(METHOD_KEYS)}"
                raise ConfigError(f"{where}.{k}: not a method key; {hint}")
        strategy = str(m.get("strategy") or label)
        if strategy not in strategies:
            close = difflib.get_close_matches(strategy, strategies, n=2)
            hint = f"did you mean {' or '.join(close)}?" if close else "see conf/strategy/"
            raise ConfigError(f"{where}.strategy: unknown strategy {strategy!r}; {hint}")
        settings, grid = dict(m.get("settings") or {}), dict(m.get("grid") or {})
        for k in settings:
            _check_key(f"{where}.settings", str(k), params, strategy)
        for k, vals in grid.items():
            _check_key(f"{where}.grid", str(k), params, strategy)
            if isinstance(vals, dict):  # a range {low, high, log}: searched by study.search=optuna
                grid[k] = check_range(f"{where}.grid.{k}", vals)
                continue
            if not isinstance(vals, list) or not vals:
                raise ConfigError(f"{where}.grid.{k} must be a non-empty list of values, got {vals!r}")
            if _first_duplicate(vals) is not None:
                raise ConfigError(f"{where}.grid.{k} lists {_first_duplicate(vals)!r} twice; each value once")
        out.append(Method(str(label), strategy, settings, grid))
    return out


def check_budget(methods: list[Method], file: str) -> None:
    """The same number of points for every tuned method (one with a grid): no method is tuned harder."""
    tuned = [m for m in methods if m.grid]
    if len({m.size for m in tuned}) > 1:
        a, b = max(tuned, key=lambda m: m.size), min(tuned, key=lambda m: m.size)
        raise ConfigError(f"{file}: study.methods.{a.label}.grid has {a.size} points and study.methods.{b.label}."
                          f"grid {b.size}; give every tuned method the same number of points (or "
                          f"study.equal_budget=false)")


def check_selection(run: RunSpec, file: str, metrics: list[str]) -> tuple[str, bool]:
    sel = dict(run.study.select or {})
    metric, direction = str(sel.get("metric")), str(sel.get("direction", "max"))
    if direction not in DIRECTIONS:
        raise ConfigError(f"{file}: study.select.direction must be max or min, got {direction!r}")
    known = metrics + [f"selected_{m}" for m in metrics]
    if metric not in known and not (metric.startswith("task/") and run.task is not None):
        close = difflib.get_close_matches(metric, known, n=2)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the scorers compute {', '.join(metrics)}"
        raise ConfigError(f"{file}: study.select.metric: no scorer computes {metric!r}; {hint} "
                          f"(add its scorer to scorers.names)")
    frac = run.study.dev_fraction
    if not 0 < float(frac) < 1:
        raise ConfigError(f"{file}: study.dev_fraction must be in (0, 1) (the share of prompts to choose on), "
                          f"got {frac}")
    return metric, DIRECTIONS[direction]


def check_options(run: RunSpec, file: str) -> list[int]:
    s = run.study
    if str(s.noise) not in NOISE:
        raise ConfigError(f"{file}: study.noise must be shared or independent, got {s.noise!r}")
    if int(s.bootstrap) < 0:
        raise ConfigError(f"{file}: study.bootstrap must be >= 0 (resamples of the test prompts), got {s.bootstrap}")
    if s.fuse is not None and int(s.fuse) < 1:
        raise ConfigError(f"{file}: study.fuse must be >= 1 or null, got {s.fuse}")
    seeds = [check_seed("seed", run.seed)] if s.seeds is None else [check_seed("study.seeds", x) for x in s.seeds]
    if not seeds or _first_duplicate(seeds) is not None:
        raise ConfigError(f"{file}: study.seeds must list distinct seeds (or null: the top-level seed)")
    return seeds


def method_seed(label: str, seed: int, noise: str) -> int:
    """shared: the seed itself (common random numbers); independent: salted by the method's label."""
    if noise == "shared":
        return seed
    return int.from_bytes(hashlib.sha256(f"{label}:{seed}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def method_points(m: Method, mrun: RunSpec, file: str, seeds: list[int], noise: str) -> list[Point]:
    """`mrun`: the study's settings with the method's strategy group."""
    where = f"{file}: study.methods.{m.label}"
    mrun = with_strategy(mrun, m.settings, mrun.seed, f"{where}.settings")
    out = []
    for combo in itertools.product(*m.grid.values()):
        values = dict(zip(m.grid, combo))
        for s in seeds:
            seed = method_seed(m.label, s, noise)
            name = f"{m.label}," + point_name(values, seed)
            prun = with_strategy(mrun, values, seed, f"{where}.grid")
            try:
                spec = validate(prun)
            except ConfigError as e:
                raise ConfigError(f"{where}: point {name}: {e}") from None
            out.append(Point(name, values, seed, prun, spec, fuse_key(spec, name)))
    return out


def base_settings(run: RunSpec) -> dict:
    """What every point shares and the study directory's fingerprint covers (the methods are per point)."""
    d = run.settings()
    for k in (*NOT_FINGERPRINTED, "strategy", "study"):
        d.pop(k, None)
    return d


def make_study(run: RunSpec, compose_method: Callable[[str], RunSpec], strategies: list[str],
               metrics: list[str], file: Optional[str] = None) -> StudyPlan:
    """Check the study and every point (ConfigError, one line naming the file and key); no model, no files.
    `compose_method(strategy)`: the spec of the study's command line composed with strategy=<strategy>."""
    file = file or study_file(run)
    methods = parse_methods(copy.deepcopy(dict(run.study.methods or {})), file, strategies)
    search = check_search(run, file, {m.label: m.grid for m in methods})
    if run.study.equal_budget and search == "grid":
        check_budget(methods, file)
    metric, maximize = check_selection(run, file, metrics)
    seeds = check_options(run, file)
    points, method_of, runs = [], {}, {}
    for m in methods:  # with optuna: the points that check each space (both ends of a range), not run
        runs[m.label] = compose_method(m.strategy)
        probe = m if search == "grid" else dataclasses.replace(m, grid=probe_grid(m.grid))
        for p in method_points(probe, runs[m.label], file, seeds, str(run.study.noise)):
            points.append(p)
            method_of[p.name] = m.label
    if metric.startswith("selected_") and not any(p.spec.search.get("selector") for p in points):
        raise ConfigError(f"{file}: study.select.metric: {metric} needs a method with a selector "
                          f"(strategy=self_consistency); select {metric.removeprefix('selected_')}")
    base = base_settings(run)
    fp = hashlib.sha256(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:16]
    opt = None
    if search == "optuna":
        spaces = {m.label: m.grid for m in methods if m.grid}
        opt = Search(int(run.study.trials), int(run.seed), spaces, runs, seeds, str(run.study.noise), file)
    return StudyPlan(run, str(run.study.name), file, methods, points, method_of, metric, maximize, fp, base, opt)
