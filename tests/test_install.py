"""decodebench as a user installs it: a wheel (not editable) in a fresh venv, run from another directory,
with the configs shipped inside the wheel and a researcher's own config directory beside them."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

TINY = ["model=tiny", "dataset.limit=2", "strategy.max_new_tokens=4", "logger=none", "scorers=text",
        "progress=false", "device=cpu"]
MY_STRATEGY = "# my own strategy, outside the installed package\nname: my_topp\ndo_sample: true\ntop_p: 0.5\n"


def _source_copy(dst: Path) -> Path:
    """The checkout's files without build leftovers, so the wheel is built from what git would hold."""
    skip = shutil.ignore_patterns(".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", "wandb")
    shutil.copytree(ROOT, dst, ignore=skip)
    return dst


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding only the decodebench wheel; its dependencies come from this interpreter's
    site-packages through a .pth line (a plain path: that directory's own .pth files, such as an editable
    install of a checkout, are not run), so nothing is downloaded."""
    tmp = tmp_path_factory.mktemp("install")
    src = _source_copy(tmp / "src")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("decodebench-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    py = env / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    here = dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
    (purelib / "zz_decodebench_deps.pth").write_text("\n".join(here) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return env


def _run(env: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / "python"), "-m", "decodebench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd),
                                                       "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"})


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_from_anywhere(venv, tmp_path):
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import decodebench; from decodebench.config import conf_dir; "
                            "print(decodebench.__file__); print(conf_dir())"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where  # the wheel's copy, not the checkout
    assert (Path(where[1]) / "strategy" / "topp.yaml").is_file()

    res = _run(venv, ["strategy=topp", *TINY], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    run_dir = tmp_path / last["run_dir"]
    assert run_dir.is_relative_to(tmp_path / "outputs" / "runs")  # Hydra's default, under the caller's cwd
    assert (run_dir / "metrics.json").is_file() and "distinct_2" in last["metrics"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["strategy"]["name"] == "topp" and info["strategy"]["params"]["top_p"] == 0.95

    board = subprocess.run([str(venv / "bin" / "decodebench"), "report", str(run_dir), "--samples", "0"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert board.returncode == 0, board.stderr[-2000:]  # the console script, and the report from the wheel
    assert json.loads(board.stdout.strip().splitlines()[-1])["rows"] == 1 and (run_dir / "leaderboard.html").is_file()

    bad = _run(venv, ["strategy=topq", *TINY], tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "did you mean 'topp'" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_installed_package_takes_my_own_config_dir(venv, tmp_path):
    mine = tmp_path / "my_conf" / "strategy"
    mine.mkdir(parents=True)
    (mine / "my_topp.yaml").write_text(MY_STRATEGY)
    res = _run(venv, ["strategy=my_topp", "hydra.searchpath=[file://my_conf]", *TINY], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir = tmp_path / json.loads(res.stdout.strip().splitlines()[-1])["run_dir"]
    params = json.loads((run_dir / "run.json").read_text())["strategy"]["params"]
    assert params["top_p"] == 0.5 and params["do_sample"] is True
