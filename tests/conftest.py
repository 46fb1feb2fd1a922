"""Shared fixtures: the embedded model (loaded once per session), the tiny model, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _threads_per_worker() -> int | None:
    """Under pytest-xdist (scripts/test.sh runs `-n auto`), the cores split between the workers: each
    worker, and each process a test starts, gets `cores // workers` torch threads (at least one). Two
    workers of two threads each on two cores would make every OpenMP barrier wait on a descheduled
    thread. Outside xdist: torch's own default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


if (_THREADS := _threads_per_worker()) is not None:
    # set before torch is first imported (it reads these once), and inherited by the CLI runs tests start
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(_THREADS)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer): SmolLM2-135M-Instruct from the embedded GGUF, float32 on CPU."""
    from decodebench.models import ModelConfig, load_model

    return load_model(ModelConfig(), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny():
    from decodebench.models import ModelConfig, load_model

    return load_model(ModelConfig(name_or_path="tiny-random"), device="cpu", dtype="float32")


def compose(overrides=()):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decodebench.config import conf_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hcompose(config_name="config", overrides=list(overrides))


@pytest.fixture
def cfg_of():
    return compose
