"""Run directories as the leaderboard sees them: each one a `Run` (strategy, flat settings, seed, metrics or
its error), found up to `MAX_DEPTH` levels below a path. The files are read by `decodebench.results.read_run`;
this module only turns them into the report's flat dotted settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

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



def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _settings_of(d: Path) -> tuple[str, dict[str, Any], Optional[int]]:
    """(strategy name, flat settings, seed) from config.yaml, else run.json."""
    import yaml

    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else None
    info = _read_json(d / "run.json") if (d / "run.json").is_file() else {}
    settings: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for group in SETTING_GROUPS:
            if isinstance(cfg.get(group), dict):
                settings.update(_flatten(cfg[group], f"{group}."))
        settings.update({k: cfg[k] for k in TOP_SETTING_KEYS if k in cfg})
        if "generations" in cfg and "strategy" not in cfg:  # a `score` verb directory
            settings["strategy.name"] = f"scored:{Path(str(cfg['generations'])).name}"
    elif info:
        st = info.get("strategy") or {}
        settings.update(_flatten({k: v for k, v in st.items() if k not in ("params", "search")}, "strategy."))
        settings.update(_flatten({**(st.get("search") or {}), **(st.get("params") or {})}, "strategy."))
        settings.update({k: info[k] for k in ("device", "dtype", "batch_size") if k in info})
        if "model" in info:
            settings["model.name_or_path"] = info["model"]
    seed = (cfg or {}).get("seed", info.get("seed"))
    name = settings.pop("strategy.name", None) or "?"
    return str(name), settings, seed


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
    name, settings, seed = _settings_of(d)
    if (d / "metrics.json").is_file():
        metrics = {k: float(v) for k, v in _read_json(d / "metrics.json").items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return Run(d, name, settings, seed, metrics)
    if (d / "error.json").is_file():
        err = _read_json(d / "error.json")
        point = _point_settings(err.get("point") or {})
        seed = point.pop("seed", seed)
        name = str(point.pop("strategy.name", None) or name)
        error = _one_line(err.get("error", "(no message)"))
        return Run(d, name, {**settings, **point}, seed, {}, error)
    return Run(d, name, settings, seed, {}, "unfinished: no metrics.json (still running, or killed)")


def _is_result_dir(d: Path) -> bool:
    return any((d / f).is_file() for f in ("metrics.json", "error.json", "run.json"))


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_runs(path: Path, depth: int = MAX_DEPTH) -> list[Run]:
    """Every run and failed point at or below `path`, in natural directory order."""
    if _is_result_dir(path):
        return [read_run(path)]
    if depth == 0:
        return []
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural)
    return [run for c in children for run in find_runs(c, depth - 1)]

