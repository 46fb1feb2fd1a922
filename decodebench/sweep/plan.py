"""A sweep's plan, made before any model loads: the grid's points, their configs, fusion groups, the sweep dir.

    sweep:                       # conf/sweep/<strategy>.yaml, composed for the chosen strategy
      grid: {top_p: [0.8, 0.9, 0.95], temperature: [0.7, 1.0]}   # strategy parameter -> values
      seeds: [0, 1]              # absent or null: the top-level seed (seed=N)

The points are the product of the grid's lists in the order written (the last key varies fastest), each
once per seed (seeds fastest of all). A point's config is the composed config with `strategy.<param>` and
`seed` set: what `python -m decodebench strategy=... strategy.<param>=<v> seed=<s>` composes.

The sweep directory's `sweep.json` stores a fingerprint of everything that is not swept (the config less
the grid's strategy parameters, the seed, and settings that do not change results: logger, progress,
batch_size, sweep.*); a sweep started again in the same directory must have the same fingerprint, so
results of different configurations are never mixed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from decodebench import results
from decodebench.config import ConfigError, StrategyConfig, check_seed, conf_dir, validate
# Sampling-only parameters (the table's warpers): no effect on rows with do_sample=false.
from decodebench.decoding.params import PARAMS, SAMPLING_ONLY
from decodebench.specs import RunSpec, with_strategy

SWEEP_JSON = "sweep.json"
# Settings that do not change a point's results: left out of the fingerprint.
NOT_FINGERPRINTED = ("sweep", "logger", "progress", "batch_size", "seed")
# Strategy config keys that are not parameters one can sweep (the table's structured values among them).
NOT_PARAMS = ("name", "method") + tuple(p.name for p in PARAMS if not p.sweep)


@dataclass
class Point:
    name: str  # its directory name under the sweep dir: "top_p=0.8,temperature=0.7,seed=0"
    values: dict[str, Any]  # grid parameter -> value
    seed: int
    run: RunSpec  # the settings of this point run alone
    spec: Any  # its StrategySpec
    fuse_key: str  # points with the same key can share batches

    @property
    def settings(self) -> dict[str, Any]:
        """What error.json records of a failed point: strategy name, grid values, seed."""
        return {"strategy": self.spec.name, **self.values, "seed": self.seed}

    def overrides(self) -> list[str]:
        """The command-line overrides that make this point from the sweep's base command line."""
        return [f"strategy.{k}={_override_value(v)}" for k, v in self.values.items()] + [f"seed={self.seed}"]


@dataclass
class Plan:
    run: RunSpec  # the base settings
    strategy: str
    grid: dict[str, list]
    seeds: list[int]
    points: list[Point]
    fingerprint: str
    base: dict  # the fingerprinted (not swept) settings

    def groups(self, fuse: Optional[int]) -> list[list[Point]]:
        """Points in fusion groups of at most `fuse` (None: no limit), in grid order."""
        by_key: dict[str, list[Point]] = {}
        for p in self.points:
            by_key.setdefault(p.fuse_key, []).append(p)
        out = []
        for members in by_key.values():
            n = fuse or len(members)
            out += [members[i: i + n] for i in range(0, len(members), n)]
        return out


def _override_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else "null" if v is None else str(v)


def _fmt(v: Any) -> str:
    s = f"{v:g}" if isinstance(v, float) else _override_value(v)
    return re.sub(r"[^\w.+\-=\[\],]", "_", s)


def point_name(values: dict[str, Any], seed: int) -> str:
    name = ",".join([f"{k}={_fmt(v)}" for k, v in values.items()] + [f"seed={seed}"])
    if len(name) > 180:  # file systems cap names at 255 bytes
        name = name[:160] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def _check_grid(run: RunSpec) -> tuple[dict[str, list], list[int]]:
    strategy = str(run.strategy["name"])
    raw = copy.deepcopy(dict(run.sweep.grid or {}))
    if not raw:
        has_file = (conf_dir() / "sweep" / f"{strategy}.yaml").is_file()
        why = "its grid is empty" if has_file else f"there is no conf/sweep/{strategy}.yaml"
        raise ConfigError(f"sweep.grid: strategy {strategy} has no grid ({why}); give values on the command line, "
                          f"e.g. sweep.grid.temperature=[0.7,1.0]")
    params = [f.name for f in dataclasses.fields(StrategyConfig) if f.name not in NOT_PARAMS]
    grid: dict[str, list] = {}
    for key, vals in raw.items():
        k = str(key).removeprefix("strategy.")
        if k == "seed":
            raise ConfigError("sweep.grid.seed: seeds are not a grid parameter; set sweep.seeds=[0,1,2]")
        if k not in params:
            close = difflib.get_close_matches(k, params, n=2)
            hint = f"did you mean {' or '.join(close)}?" if close else "see StrategyConfig in decodebench/config.py"
            raise ConfigError(f"sweep.grid.{k}: strategy {strategy} has no parameter {k!r}; {hint}")
        if not isinstance(vals, list):
            raise ConfigError(f"sweep.grid.{k} must be a list of values, got {vals!r}; write sweep.grid.{k}=[{vals}] "
                              f"(or strategy.{k}={vals} to fix it)")
        if not vals:
            raise ConfigError(f"sweep.grid.{k} has no values; give at least one, e.g. sweep.grid.{k}=[...], "
                              f"or remove it with ~sweep.grid.{k}")
        dup = _first_duplicate(vals)
        if dup is not None:
            raise ConfigError(f"sweep.grid.{k} lists {dup!r} twice; each value once")
        grid[k] = vals
    seeds = run.sweep.seeds
    seeds = [check_seed("seed", run.seed)] if seeds is None else [check_seed("sweep.seeds", s) for s in seeds]
    if not seeds:
        raise ConfigError("sweep.seeds has no values; give at least one (sweep.seeds=[0]) or null for the top-level seed")
    dup = _first_duplicate(seeds)
    if dup is not None:
        raise ConfigError(f"sweep.seeds lists {dup} twice; each seed once")
    if run.sweep.fuse is not None and int(run.sweep.fuse) < 1:
        raise ConfigError(f"sweep.fuse must be >= 1 (points generated together) or null, got {run.sweep.fuse}")
    return grid, seeds


def _first_duplicate(vals: list) -> Any:
    seen = set()
    for v in vals:
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            return v
        seen.add(key)
    return None


def fuse_key(spec, name: str) -> str:
    """Points can share batches when only per-row settings differ: the sampling method, and the same
    loop-level settings (max_new_tokens, stops, samples per prompt, transform order). Not with max_time,
    whose cut depends on the batch's speed."""
    from decodebench.decoding.search.methods import METHODS

    if not METHODS.get(spec.method).fusable or spec.max_time is not None:
        return f"alone:{name}"
    return json.dumps([spec.method, spec.max_new_tokens, list(spec.stop), list(spec.stopping),
                       spec.num_return_sequences, repr(spec.params.order), spec.search], sort_keys=True, default=str)


def base_settings(run: RunSpec, grid: dict) -> dict:
    """The config less what is swept and what does not change results: what the fingerprint covers."""
    d = run.settings()
    for k in NOT_FINGERPRINTED:
        d.pop(k, None)
    for k in grid:
        d["strategy"].pop(k, None)
    return d


def fingerprint_of(base: dict) -> str:
    return hashlib.sha256(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_plan(run: RunSpec) -> Plan:
    """Check the grid and every point's settings (ConfigError, one line); no model, no files."""
    grid, seeds = _check_grid(run)
    points = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        for seed in seeds:
            name = point_name(values, seed)
            prun = with_strategy(run, values, seed)
            try:
                spec = validate(prun)
            except ConfigError as e:
                raise ConfigError(f"sweep point {name}: {e}") from None
            points.append(Point(name, values, seed, prun, spec, fuse_key(spec, name)))
    strategy = str(run.strategy["name"])
    if all(not p.spec.params.do_sample for p in points):
        idle = [k for k in grid if k in SAMPLING_ONLY]
        if idle:
            raise ConfigError(f"sweep.grid.{idle[0]}: strategy {strategy} does not sample (do_sample=false), so "
                              f"{idle[0]} has no effect; sweep a sampling strategy (e.g. strategy=sample)")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("sweep.grid: two points get the same directory name; use values that print differently")
    base = base_settings(run, grid)
    return Plan(run, strategy, grid, seeds, points, fingerprint_of(base), base)


def default_dir(strategy: str) -> Path:
    return Path("outputs/sweeps") / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}-{strategy}"


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"]


_RESULT_GLOBS = ("metrics.json", "run.json", "error.json", "generations*.jsonl")


def _holds_results(d: Path) -> bool:
    return d.is_dir() and any(any(d.glob(g)) for g in _RESULT_GLOBS)


def claim_dir(sweep_dir: Path, plan: Plan) -> dict:
    """Create or reopen the sweep directory; refuse one that holds another configuration's results."""
    meta_path = sweep_dir / SWEEP_JSON
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != plan.fingerprint:
            diff = _diff(meta.get("config", {}), plan.base) or ["(settings not recorded)"]
            more = f" (and {len(diff) - 2} more)" if len(diff) > 2 else ""
            raise ConfigError(f"sweep.dir {sweep_dir} holds a sweep of a different configuration "
                              f"({'; '.join(diff[:2])}{more}); use a new sweep.dir, or the settings it was run with")
    elif _holds_results(sweep_dir) or any(_holds_results(c) for c in (sweep_dir.iterdir() if sweep_dir.is_dir() else [])):
        raise ConfigError(f"sweep.dir {sweep_dir} already holds results that are not a decodebench sweep "
                          f"(no {SWEEP_JSON}); use a new sweep.dir")
    else:
        meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "points": []}
    meta.update({
        "strategy": plan.strategy, "fingerprint": plan.fingerprint, "grid": plan.grid, "seeds": plan.seeds,
        "points": list(dict.fromkeys(list(meta.get("points", [])) + [p.name for p in plan.points])),
        "config": plan.base, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    results.write_json_atomic(meta_path, meta)
    return meta
