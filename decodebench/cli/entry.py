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

from decodebench import results, runner, wandb_sink
from decodebench.cli import preflight, summary
from decodebench.config import ConfigError, conf_dir, register_configs
from decodebench.specs import to_specs

register_configs()


def default_run_dir(cfg: DictConfig) -> str:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.output_dir
    return str(Path("outputs/runs") / time.strftime("%Y-%m-%d/%H-%M-%S"))


def run(cfg: DictConfig, run_dir: Optional[str] = None) -> dict:
    """Run one configuration; returns {"run_dir", "metrics", ...}. Raises ConfigError on bad input."""
    spec = to_specs(cfg)  # the one conversion: nothing after this reads the Hydra config
    res = runner.execute(spec, run_dir or default_run_dir(cfg), preflight.prepared_for(cfg))
    res["wandb_dir"] = wandb_sink.log_run(spec.logger_settings(), results.read_run(res["run_dir"]))
    return res


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> Optional[dict]:
    from decodebench import distributed

    logging.getLogger("decodebench").setLevel(logging.INFO)
    distributed.slurm_env()  # a SLURM job of several tasks (hydra/launcher=slurm_dp): each task is a rank
    return distributed.launch(lambda: _main(cfg), str(cfg.device))  # None on the worker ranks


def _main(cfg: DictConfig) -> dict:
    from decodebench.preemption import preemptible

    try:
        with preemptible("run", results.kept):  # also when a launcher's job calls this without the CLI in front
            res = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk, a permission: one line naming the path (Hydra would print a traceback)
        print(f"error: {results.os_error_line(e)}", file=sys.stderr)
        sys.exit(1)
    summary.print_summary(res)  # the table on stderr; stdout's last line stays the JSON
    print(runner.machine_line(res), flush=True)
    return res
