"""Hydra callback: a multirun ends with the same leaderboard files as a sweep (conf/config.yaml, hydra.callbacks).

With any launcher (basic, submitit, joblib) `on_multirun_end` runs in the launching process once every job
is done; it writes leaderboard.{md,csv,html} in the multirun's sweep directory. A failure here is logged,
never raised: the jobs' results are already on disk, and `python -m decodebench report DIR` redoes it.
"""

from __future__ import annotations

import logging

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("decodebench")


class Leaderboard(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.enabled:
            return
        from decodebench.report import write_leaderboard

        where = str(config.hydra.sweep.dir)
        try:
            res = write_leaderboard(where)
            log.info("leaderboard: %s", res["markdown"])
        except Exception as e:  # noqa: BLE001 - the results are on disk; the report verb can redo this
            log.warning("no leaderboard for %s (%s: %s); try: python -m decodebench report %s",
                        where, type(e).__name__, e, where)
