"""@hydra.main -> run(cfg) -> dict of results. Glue only."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from decodebench import runner, wandb_sink
from decodebench.config import ConfigError, register_configs

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_configs()


def default_run_dir(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.output_dir
    return str(Path("outputs/runs") / time.strftime("%Y-%m-%d/%H-%M-%S"))


def run(cfg: DictConfig, run_dir: Optional[str] = None) -> dict:
    """Run one configuration; returns {"run_dir", "metrics", ...}. Raises ConfigError on bad input."""
    res = runner.execute(cfg, run_dir or default_run_dir(cfg))
    res["wandb_dir"] = wandb_sink.log_run(cfg, res["run_dir"], res["metrics"],
                                          runner.results.read_generations(res["run_dir"]))
    return res


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> Optional[dict]:
    from decodebench import distributed

    logging.getLogger("decodebench").setLevel(logging.INFO)
    distributed.slurm_env()  # a SLURM job of several tasks (hydra/launcher=slurm_dp): each task is a rank
    return distributed.launch(lambda: _main(cfg), str(cfg.device))  # None on the worker ranks


def _main(cfg: DictConfig) -> dict:
    try:
        res = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(runner.summarize(res))
    print(runner.machine_line(res), flush=True)
    return res
