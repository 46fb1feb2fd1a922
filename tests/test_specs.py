"""The one conversion at the door (decodebench/specs.py): the composed Hydra config becomes a typed RunSpec
once; no module after it reads a Hydra config."""

from __future__ import annotations

import ast
import dataclasses

import pytest
from omegaconf import OmegaConf

from decodebench.api_models.settings import ApiModelConfig
from decodebench.config import ConfigError, LoggerConfig, StudyConfig, SweepConfig
from decodebench.data import DatasetConfig
from decodebench.models import ModelConfig
from decodebench.specs import RunSpec, read_settings, to_specs, with_strategy
from decodebench.tasks.config import TaskConfig
from tests.conftest import ROOT, compose

PKG = ROOT / "decodebench"
# Where a Hydra/OmegaConf config may be read: the CLI, the conversion, the Hydra callback; config.py and
# tasks/config.py hold the schemas (MISSING) and the resolver Hydra needs.
HYDRA_SIDE = ("cli/", "specs.py", "sweep/callback.py")
SCHEMAS = ("config.py", "tasks/config.py")
TINY = ["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=3", "logger=none"]


def _files():
    return {str(f.relative_to(PKG)): f for f in PKG.rglob("*.py")}


def _omegaconf_names(path) -> set[str]:
    """Names a module imports from omegaconf (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "omegaconf":
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "omegaconf"}
    return out


def test_only_the_cli_the_conversion_and_the_callback_name_dictconfig():
    named = sorted(rel for rel, f in _files().items() if "DictConfig" in f.read_text())
    assert named and all(rel.startswith(HYDRA_SIDE) for rel in named), named
    assert "specs.py" in named and "sweep/callback.py" in named  # the check would see a regression


def test_no_module_past_the_door_imports_omegaconf():
    found = {rel: _omegaconf_names(f) for rel, f in _files().items()}
    outside = {rel: names for rel, names in found.items() if names and not rel.startswith(HYDRA_SIDE)}
    assert set(outside) <= set(SCHEMAS), outside
    assert found["config.py"] <= {"MISSING", "OmegaConf"} and found["tasks/config.py"] == {"MISSING"}
    assert _omegaconf_names(PKG / "runner.py") == set() and _omegaconf_names(PKG / "sweep" / "plan.py") == set()


def test_the_spec_is_typed_frozen_and_its_settings_are_a_copy():
    run = to_specs(compose(TINY + ["strategy=topp", "seed=5", "batch_size=3", "record=[entropy]"]))
    assert isinstance(run, RunSpec) and type(run.model) is ModelConfig and isinstance(run.dataset, DatasetConfig)
    assert isinstance(run.logger, LoggerConfig) and isinstance(run.sweep, SweepConfig)
    assert run.study is None and run.task is None
    assert (run.seed, run.batch_size, run.record, run.strategy["name"], run.dataset.limit) == \
        (5, 3, ("entropy",), "topp", 2)
    assert type(run.strategy) is dict and type(run.scorers) is dict  # plain values, no config nodes
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 1  # type: ignore[misc]
    s = run.settings()
    s["strategy"]["top_p"] = 0.01
    assert run.config["strategy"]["top_p"] != 0.01 and run.settings()["seed"] == 5


def test_groups_with_their_own_schema_become_their_dataclasses():
    api = to_specs(compose(["model=api", "model.base_url=http://127.0.0.1:9/v1", "model.name=m", "logger=none"]))
    assert type(api.model) is ApiModelConfig and api.model.base_url == "http://127.0.0.1:9/v1"
    task = to_specs(compose(TINY + ["task=lm_eval", "task.name=decodebench_arith", "task.limit=3"]))
    assert isinstance(task.task, TaskConfig) and (task.task.name, task.task.limit) == ("decodebench_arith", 3)
    study = to_specs(compose(TINY + ["study=open_ended"]))
    assert isinstance(study.study, StudyConfig) and study.study.methods


@pytest.mark.parametrize("args", [TINY, TINY + ["strategy=beam"], TINY + ["dataset=books", "strategy=topp"]])
def test_config_yaml_and_the_round_trip_match_the_composed_config(args, tmp_path):
    cfg = compose(args)
    run = to_specs(cfg)
    assert run.to_yaml() == OmegaConf.to_yaml(cfg, resolve=True)  # config.yaml as before
    (tmp_path / "config.yaml").write_text(run.to_yaml())
    again = to_specs(OmegaConf.load(tmp_path / "config.yaml"))  # a run started from its config.yaml
    assert again == run
    assert read_settings(tmp_path / "config.yaml") == run.settings()


def test_a_point_equals_the_command_line_that_sets_its_values():
    base = TINY + ["strategy=topp"]
    point = with_strategy(to_specs(compose(base)), {"top_p": 0.5, "temperature": 0.7}, 3)
    alone = to_specs(compose(base + ["strategy.top_p=0.5", "strategy.temperature=0.7", "seed=3"]))
    assert point == alone and point.to_yaml() == alone.to_yaml()
    with pytest.raises(ConfigError, match=r"^sweep\.grid\.top_k: 'many' is not a value of strategy\.top_k \("):
        with_strategy(alone, {"top_k": "many"}, 0)
    with pytest.raises(ConfigError, match=r"^x\.y\.max_new_tokens: 1\.5 is not a value"):
        with_strategy(alone, {"max_new_tokens": 1.5}, 0, where="x.y")


@pytest.mark.parametrize("args, message", [
    (["seed=-1"], r"^seed must be an integer in \[0, 2\*\*63\), got -1"),
    (["batch_size=0"], r"^batch_size must be an integer >= 1 or auto, got 0$"),
    (["sync_every=0"], r"^sync_every must be a positive integer"),
    (["device=gpu"], r"^device must be auto, cpu, cuda or cuda:N, got 'gpu'$"),
    (["logger.mode=loud"], r"^logger\.mode must be offline, online or disabled, got 'loud'$"),
    (["dataset.name=nope"], r"^dataset\.name: unknown dataset source 'nope'"),
    (["dataset.system_prompt=hi"], r"^dataset\.system_prompt: only used inside a chat template"),
    (["task=lm_eval"], r"^task\.name: Missing mandatory value"),
])
def test_the_conversion_refuses_bad_settings_in_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as e:
        to_specs(compose(TINY + args))
    assert "\n" not in str(e.value)


def test_a_loaded_config_with_a_key_no_schema_has_is_one_line(tmp_path):
    d = to_specs(compose(TINY)).settings()
    d["model"]["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"^model: .*colour.*; remove the key$"):
        to_specs(OmegaConf.create(d))
