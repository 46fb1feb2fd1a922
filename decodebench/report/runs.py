"""Run directories as the leaderboard sees them: each one a `Run` (strategy, flat settings, seed, metrics or
its error), found up to `MAX_DEPTH` levels below a path. The files are read by `decodebench.results.read_run`;
this module only turns them into the report's flat dotted settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from decodebench import results

MAX_DEPTH = 3
NEUTRAL_KEYS = ("seed",)  # runs that differ only here are one row
TOP_SETTING_KEYS = ("batch_size", "device", "dtype")
SETTING_GROUPS = ("strategy", "model", "dataset")


@dataclass
class Run:
    """One run directory (or failed grid point) as read from disk."""

    dir: Path
    strategy: str
    settings: dict[str, Any]  # flat dotted keys: strategy.top_p, model.name_or_path, batch_size, ...
    seed: Optional[int]
    metrics: dict[str, float]
    error: Optional[str] = None



def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _settings_of(run: results.RunDir) -> tuple[str, dict[str, Any], Optional[int]]:
    """(strategy name, flat settings, seed) from config.yaml, else run.json."""
    cfg, info = run.config, run.info
    settings: dict[str, Any] = {}
    if cfg is not None:
        for group in SETTING_GROUPS:
            if isinstance(cfg.get(group), dict):
                settings.update(_flatten(cfg[group], f"{group}."))
        settings.update({k: cfg[k] for k in TOP_SETTING_KEYS if k in cfg})
        if "generations" in cfg and "strategy" not in cfg:  # a `score` verb directory
            settings["strategy.name"] = f"scored:{Path(str(cfg['generations'])).name}"
    elif info:
        st = info.get("strategy") or {}
        settings.update(_flatten({k: v for k, v in st.items() if k not in ("params", "search")}, "strategy."))
        settings.update(_flatten({**_mapping(st.get("search")), **_mapping(st.get("params"))}, "strategy."))
        settings.update({k: info[k] for k in ("device", "dtype", "batch_size") if k in info})
        if "model" in info:
            settings["model.name_or_path"] = info["model"]
    name = settings.pop("strategy.name", None) or "?"
    return str(name), settings, run.seed


def _mapping(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _point_settings(point: dict) -> dict[str, Any]:
    """A grid point's settings ({"top_p": 0.8} or {"strategy.top_p": 0.8}) as flat dotted keys."""
    out = {}
    for k, v in _flatten(point).items():
        k = str(k).lstrip("+~")
        k = "strategy.name" if k == "strategy" else k
        out[k if "." in k or k in TOP_SETTING_KEYS + NEUTRAL_KEYS else f"strategy.{k}"] = v
    return out


def _one_line(text: Any) -> str:
    lines = [s.strip() for s in str(text).strip().splitlines() if s.strip()]
    return lines[-1] if lines else "(no message)"


def read_run(d: Path) -> Run:
    """One directory: a complete run, a failed point (error.json), or an unfinished run."""
    run = results.read_run(d)
    name, settings, seed = _settings_of(run)
    if run.metrics is not None:
        metrics = {k: float(v) for k, v in run.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return Run(d, name, settings, seed, metrics)
    if run.error is not None:
        err = run.error
        point = _point_settings(err.get("point") or {})
        seed = point.pop("seed", seed)
        name = str(point.pop("strategy.name", None) or name)
        error = _one_line(err.get("error", "(no message)"))
        return Run(d, name, {**settings, **point}, seed, {}, error)
    return Run(d, name, settings, seed, {}, "unfinished: no metrics.json (still running, or killed)")


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_runs(path: Path, depth: int = MAX_DEPTH) -> list[Run]:
    """Every run and failed point at or below `path`, in natural directory order."""
    if results.is_run_dir(path):
        return [read_run(path)]
    if depth == 0:
        return []
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural)
    return [run for c in children for run in find_runs(c, depth - 1)]

