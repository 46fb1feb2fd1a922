"""Check a command line before Hydra runs it: compose the config, validate it, load nothing heavy.

Hydra's own composition errors are several lines with a hint about HYDRA_FULL_ERROR; researchers get one
line instead: the key, what is wrong, what to change (with "did you mean" for unknown names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from decodebench.registry import did_you_mean

GROUPS = ("model", "dataset", "strategy", "logger", "scorers", "sweep")


def group_options(group: str, dirs: Optional[list[Path]] = None) -> list[str]:
    """The options of a config group in decodebench's configs and the user's config dirs (`user_dirs`)."""
    from decodebench.config import conf_dir

    found = [p.stem for d in [conf_dir(), *(dirs or [])] for p in (d / group).glob("*.yaml")]
    return sorted(set(found))


def _flag_free(args: list[str]) -> tuple[list[str], bool]:
    """Overrides only (no Hydra flags, no hydra.* keys); and whether it is a multirun."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("-"):
            skip = a in ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                         "--config-dir", "-cd", "--experimental-rerun", "--info", "-i") and "=" not in a
            continue
        key = a.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra"):
            continue
        out.append(a)
    return out, multirun


def _search_entries(args: list[str]) -> list[str]:
    """The search path the command line gives Hydra: `hydra.searchpath=[...]` entries, then `--config-dir`s."""
    entries = []
    for a in args:
        if a.startswith("hydra.searchpath="):
            items = (i.strip().strip("'\"") for i in a.split("=", 1)[1].strip().strip("[]").split(","))
            entries += [i for i in items if i]
    dirs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config-dir", "-cd")]
    dirs += [a.split("=", 1)[1] for a in args if a.startswith(("--config-dir=", "-cd="))]
    return entries + [f"file://{Path(d).resolve()}" for d in dirs]


def user_dirs(args: list[str]) -> Optional[list[Path]]:
    """The user's config dirs (`--config-dir`, `file://` entries of `hydra.searchpath`), relative to the
    working directory as Hydra reads them; None when the search path holds something else (`pkg://`),
    whose options this check cannot list."""
    out: list[Path] = []
    for item in _search_entries(args):
        if not item.startswith("file://"):
            return None
        out.append(Path(item.removeprefix("file://")).expanduser())
    return out


def search_path(args: list[str]) -> list[str]:
    """What lets the check see the configs Hydra will: `--config-dir DIR` and `hydra.searchpath=[...]`."""
    entries = _search_entries(args)
    return ["hydra.searchpath=[" + ",".join(entries) + "]"] if entries else []


def add_grid_keys(overrides: list[str]) -> list[str]:
    """`sweep.grid.<param>=[...]` may name a parameter the sweep file lacks: add-or-override (Hydra's `++`)."""
    return ["++" + a if a.startswith("sweep.grid.") and "=" in a else a for a in overrides]


def unknown_option(args: list[str], dirs: Optional[list[Path]] = ()) -> Optional[str]:
    """An option of a config group that no config dir holds; `dirs` None: the user's search path cannot
    be listed, so leave group options to Hydra."""
    for a in args:
        if "=" not in a and a.startswith("~") and len(a) > 1:
            continue  # Hydra's delete: ~key
        if "=" not in a:
            return f"unexpected argument {a!r}; overrides look like key=value (e.g. strategy=topp)"
        key, val = a.lstrip("+~").split("=", 1)
        if key in GROUPS and dirs is not None:
            opts = group_options(key, dirs)
            for v in val.split(","):
                if v and v not in opts:
                    return did_you_mean(f"{key} (set {key}=<name>)", v, opts)
    return None


def explain(e: BaseException) -> str:
    """One line from a Hydra/OmegaConf exception chain."""
    from omegaconf.errors import OmegaConfBaseException

    chain, cur = [], e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for c in chain:
        if isinstance(c, OmegaConfBaseException) and getattr(c, "full_key", None):
            msg = str(getattr(c, "msg", None) or c).splitlines()[0]
            return f"{c.full_key}: {msg}"
    return " ".join(str(chain[-1]).split())


def composition_error(e: BaseException, dirs: Optional[list[Path]]) -> Optional[str]:
    """Hydra's "In 'group/name': ... raised while composing config" without a key: one line naming the
    config file (and, for a sweep file, what its grid must be)."""
    import re

    m = re.match(r"In '([\w/.-]+)': \w+ raised while composing config:\s*(.*)", str(e), re.S)
    if m is None:
        return None
    name, why = m.group(1), " ".join(m.group(2).splitlines()[0].split())
    from decodebench.config import conf_dir

    found = [d / f"{name}.yaml" for d in [*(dirs or []), conf_dir()] if (d / f"{name}.yaml").is_file()]
    where = found[0] if found else f"{name}.yaml"
    group = name.split("/", 1)[0]
    if group == "sweep":
        return (f"sweep.grid: {where} does not hold a grid mapping ({why}); write grid: as parameter: [values], "
                f"e.g. grid: {{top_p: [0.8, 0.9]}}")
    return f"{group}: {where}: {why}; its keys and value types must match the {group} settings (README)"


def _compose(overrides: list[str], config_name: str = "config"):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decodebench.config import conf_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """For a multirun, each swept value once (with the others at their first value)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for o, text in zip(parsed, overrides):
        if o.is_sweep_override():
            vals = list(o.sweep_string_iterator())
            key = text.split("=", 1)[0]
            sweeps.append((len(base), key, vals))
            base.append(f"{key}={vals[0]}")
        else:
            base.append(text)
    out = [base]
    for pos, key, vals in sweeps:
        for v in vals[1:]:
            variant = list(base)
            variant[pos] = f"{key}={v}"
            out.append(variant)
    return out


def prepare_checked(args: list[str], config_name: str = "config", prepare=None):
    """(cfg, prepare(spec), None) or (None, None, one-line error). A run's config becomes its RunSpec
    (decodebench/specs.py) here; `prepare(spec)` runs the checks that need no model, and what it returns
    (a run's or a sweep's plan) is handed on, so it is made once. Another config (the score verb's) is
    handed to `prepare` as composed."""
    overrides, multirun = _flag_free(args)
    overrides = add_grid_keys(overrides)
    dirs = user_dirs(args)
    missing = [d for d in dirs or [] if not d.is_dir()]
    if missing:
        return None, None, (f"hydra.searchpath: config directory {missing[0]} does not exist (searched from "
                            f"{Path.cwd()}); give --config-dir DIR or hydra.searchpath=[file://DIR] with a "
                            f"directory that holds your configs")
    err = unknown_option(overrides, dirs)
    if err:
        return None, None, err
    overrides = search_path(args) + overrides
    if prepare is None:
        from decodebench.runner import prepare
    cfg = prepared = None
    try:
        for ov in _variants(overrides, multirun):
            cfg = _compose(ov, config_name)
            prepared = prepare(_spec(cfg) if config_name == "config" else cfg)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line for the user
        from decodebench.config import ConfigError

        msg = str(e) if isinstance(e, (ConfigError, ValueError)) and "\n" not in str(e) else None
        return None, None, msg or composition_error(e, dirs) or explain(e)
    if err := output_dirs_error(args, multirun):
        return None, None, err
    return cfg, prepared, None


def _spec(cfg):
    from decodebench.specs import to_specs

    return to_specs(cfg)


def output_dirs_error(args: list[str], multirun: bool) -> Optional[str]:
    """hydra.run.dir (hydra.sweep.dir for -m) given on the command line must be a directory we can write:
    Hydra would otherwise fail creating it with a traceback."""
    from decodebench.results import check_writable_dir

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for a in args:
        k, _, v = a.lstrip("+").partition("=")
        if k == key and v and "${" not in v:
            return check_writable_dir(key, v)
    return None


def compose_checked(args: list[str], config_name: str = "config", prepare=None):
    """(cfg, None) or (None, one-line error): `prepare_checked` without what `prepare` returned."""
    cfg, _, err = prepare_checked(args, config_name, prepare)
    return cfg, err


# What prepare_checked made for the run verb's config, until the run takes it (a multirun's other jobs,
# whose configs differ, prepare their own).
_PREPARED: dict = {}


def hand_over(cfg, prepared) -> None:
    """Keep the RunPlan made for `cfg`, so the run does not load the dataset and check everything again."""
    from omegaconf import OmegaConf

    _PREPARED.clear()
    _PREPARED["key"], _PREPARED["plan"] = OmegaConf.to_container(cfg, resolve=False), prepared


def prepared_for(cfg):
    """The RunPlan handed over for exactly this config, once; else None."""
    from omegaconf import OmegaConf

    if _PREPARED and _PREPARED["key"] == OmegaConf.to_container(cfg, resolve=False):
        return _PREPARED.pop("plan")
    return None


def check(args: list[str], config_name: str = "config", prepare=None) -> Optional[str]:
    if os.environ.get("DECODEBENCH_NO_PREFLIGHT"):
        return None
    return compose_checked(args, config_name, prepare)[1]
