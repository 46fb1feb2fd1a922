"""The one conversion at the door: a composed Hydra config becomes a typed, frozen `RunSpec`, once.

The command line becomes a Hydra config (cli/), which `to_specs` turns into plain typed values here, with
every check of the top-level settings; nothing after this module reads a Hydra config. A sweep or study
point is the base spec with some strategy settings and its seed changed (`with_strategy`), its values
checked against the strategy schema exactly as an override on the command line would be.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from decodebench.config import (ConfigError, LoggerConfig, StrategyConfig, StudyConfig, SweepConfig, check_device,
                                check_logger, check_seed, prefix_key)
from decodebench.data import DatasetConfig
from decodebench.models import ModelConfig
from decodebench.tasks.config import TaskConfig


@dataclass(frozen=True)
class RunSpec:
    """One run's checked settings, as plain typed values (the `config.yaml` of a run, read once).

    `strategy` and `scorers` stay mappings: `build_strategy` and `resolve_scorers` check them into their
    own specs (config.validate, runner.prepare). Treat every field as read-only."""

    model: ModelConfig  # ApiModelConfig for model=api
    dataset: DatasetConfig
    strategy: Mapping[str, Any]  # the strategy group's settings (decodebench.config.StrategyConfig's keys)
    logger: LoggerConfig
    scorers: Mapping[str, Any]
    sweep: SweepConfig
    study: Optional[StudyConfig]
    task: Optional[TaskConfig]
    seed: int
    batch_size: Any  # an integer >= 1, or "auto"
    sync_every: int
    continuous: bool
    compile: bool
    share_histories: Any
    device: str
    dtype: str
    record: tuple
    progress: bool
    plugins: tuple
    config: Mapping[str, Any]  # the whole resolved config: config.yaml, the resume check, fingerprints
    choices: Mapping[str, Any]  # Hydra's group choices (hydra.runtime.choices) where the config holds them

    def settings(self) -> dict:
        """A deep copy of the whole resolved config (a caller may change it)."""
        return copy.deepcopy(dict(self.config))

    def logger_settings(self) -> dict:
        """The logger group as the W&B sink takes it (decodebench/wandb_sink.py)."""
        return asdict(self.logger)

    def to_yaml(self) -> str:
        """The text of a run directory's config.yaml."""
        return OmegaConf.to_yaml(OmegaConf.create(self.settings()))


def read_settings(path, resolve: bool = False) -> dict:
    """A YAML config file (a run directory's config.yaml, a strategy file) as plain values; `resolve`:
    with its interpolations resolved."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=resolve)


def _plain(cfg: DictConfig, key: str, missing_ok: bool = False) -> Any:
    """cfg[key] as plain Python values; a missing mandatory value (???) is one line naming its key."""
    try:
        return OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=not missing_ok)
    except MissingMandatoryValue as e:
        msg = str(getattr(e, "msg", None) or e).splitlines()[0]
        raise ConfigError(f"{e.full_key}: {msg}") from None


def _model(d: dict) -> ModelConfig:
    """ModelConfig, or ApiModelConfig for model=api (an endpoint instead of weights)."""
    from decodebench.api_models.settings import API, ApiModelConfig

    api = isinstance(d, dict) and str(d.get("name_or_path")) == API
    return _build(ApiModelConfig if api else ModelConfig, d, "model")


def _build(cls, d: Any, group: str):
    """A schema dataclass from a group's plain settings; its own checks' errors name the group's key."""
    if not isinstance(d, dict):
        raise ConfigError(f"{group} must be a mapping of settings, got {d!r}")
    try:
        return cls(**d)
    except TypeError as e:  # a config.yaml loaded from disk holds keys no schema has
        raise ConfigError(f"{group}: {' '.join(str(e).split())}; remove the key") from None
    except ValueError as e:
        raise ConfigError(prefix_key(group, str(e))) from None


def _check_top(cfg: DictConfig) -> None:
    check_seed("seed", cfg.seed)
    check_device(cfg)
    bs = cfg.batch_size
    if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise ConfigError(f"batch_size must be an integer >= 1 or auto, got {bs!r}")
    se = cfg.get("sync_every", 4)
    if isinstance(se, bool) or not isinstance(se, int) or se < 1:
        raise ConfigError(f"sync_every must be a positive integer (steps between host checks), got {se!r}")
    sh = cfg.get("share_histories", "auto")
    if sh not in ("auto", True, False):
        raise ConfigError(f"share_histories must be auto, true or false (rows with one history share one "
                          f"forward), got {sh!r}")


def to_specs(cfg: DictConfig) -> RunSpec:
    """The composed config (or a run's config.yaml, loaded) as a RunSpec; ConfigError (one line) on the
    first top-level problem. The strategy and scorers are checked by runner.prepare, after plugins load."""
    _check_top(cfg)
    logger = _build(LoggerConfig, _plain(cfg, "logger"), "logger")
    check_logger(logger)
    model = _model(_plain(cfg, "model"))
    strategy = _plain(cfg, "strategy")
    dataset = _build(DatasetConfig, _plain(cfg, "dataset"), "dataset")
    task = _plain(cfg, "task") if cfg.get("task") is not None else None
    study = _plain(cfg, "study", missing_ok=True) if cfg.get("study") is not None else None
    sweep = _plain(cfg, "sweep", missing_ok=True) if cfg.get("sweep") is not None else {}
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    return RunSpec(
        model=model, dataset=dataset, strategy=strategy, logger=logger,
        scorers=_plain(cfg, "scorers", missing_ok=True) if cfg.get("scorers") is not None else {},
        sweep=_build(SweepConfig, sweep, "sweep"),
        study=None if study is None else _build(StudyConfig, study, "study"),
        task=None if task is None else _build(TaskConfig, task, "task"),
        seed=int(cfg.seed), batch_size=cfg.batch_size, sync_every=int(cfg.get("sync_every", 4)),
        continuous=bool(cfg.get("continuous", True)), compile=bool(cfg.get("compile", False)),
        share_histories=cfg.get("share_histories", "auto"),
        device=str(cfg.device), dtype=str(cfg.dtype), record=tuple(cfg.get("record") or ()),
        progress=bool(cfg.get("progress", True)), plugins=tuple(cfg.get("plugins") or ()),
        config=OmegaConf.to_container(cfg, resolve=True),
        choices={} if choices is None else OmegaConf.to_container(choices, resolve=True),
    )


_TYPED: dict[str, DictConfig] = {}


def _typed_strategy(strategy: Mapping[str, Any]) -> DictConfig:
    """The strategy under its schema, built once per distinct strategy (a study's or a sweep's points
    share their method's): the schema and the merge cost ~30 ms each, a copy of the result ~2 ms."""
    key = json.dumps(strategy, sort_keys=True, default=repr)
    if key not in _TYPED:
        _TYPED[key] = OmegaConf.merge(OmegaConf.structured(StrategyConfig), dict(strategy))
    return _TYPED[key]


def with_strategy(run: RunSpec, values: Mapping[str, Any], seed: int, where: str = "sweep.grid") -> RunSpec:
    """`run` with `strategy.<k> = v` for each value and the seed: a sweep's or a study's point. Each value
    is checked against the strategy schema as a command-line override is; a bad one is one line naming
    `where.k`."""
    node = copy.deepcopy(_typed_strategy(run.strategy))
    for k, v in values.items():
        try:
            OmegaConf.update(node, k, v, merge=False)
        except Exception as e:  # noqa: BLE001 - a type error of one value becomes one line
            msg = str(getattr(e, "msg", None) or e).splitlines()[0]
            raise ConfigError(f"{where}.{k}: {v!r} is not a value of strategy.{k} ({msg})") from None
    strategy = OmegaConf.to_container(node, resolve=True)
    config = run.settings()
    config["strategy"], config["seed"] = copy.deepcopy(strategy), int(seed)
    return replace(run, strategy=strategy, seed=int(seed), config=config)
