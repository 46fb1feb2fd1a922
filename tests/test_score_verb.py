"""The `score` verb on every released generations file under ../shared, and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from decodebench.config import conf_dir
from decodebench import results
from tests.conftest import ROOT, SHARED

FILES = sorted(SHARED.glob("conformance/*/*.json")) + sorted(SHARED.glob("corpora/*/*.json"))
PUBLISHED_DIVERSITY = {"greedy": 0.0538, "beam": 0.0404, "contrastive": 0.9254}


def compose_score(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from decodebench.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="score", overrides=list(overrides))


@pytest.mark.skipif(not FILES, reason="../shared (released generations) is not beside the repository")
@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_score_verb_on_every_shared_file(path, tmp_path):
    from decodebench.cli.score import score

    cfg = compose_score([f"generations={path}", "scorers=text", "scorers.bootstrap.samples=0", "logger=none",
                         "progress=false"])
    res = score(cfg, str(tmp_path / "s"))
    m = results.read_metrics(tmp_path / "s")
    assert m == json.loads(json.dumps(results.clean(res["metrics"])))
    assert 0.0 <= m["distinct_2"] <= 1.0 and m["gen_length"] > 10
    if path.stem in PUBLISHED_DIVERSITY:
        assert round(m["diversity"], 4) == PUBLISHED_DIVERSITY[path.stem]


@pytest.mark.skipif(not FILES, reason="../shared (released generations) is not beside the repository")
def test_score_cli_last_line_is_json(tmp_path):
    path = SHARED / "conformance/webtext-gpt2-large/greedy.json"
    p = subprocess.run([sys.executable, "-m", "decodebench", "score", f"generations={path}", "scorers=text",
                        "logger=none", "progress=false", f"hydra.run.dir={tmp_path}/s"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert round(last["metrics"]["diversity"], 4) == 0.0538 and round(last["metrics"]["gen_length"], 2) == 147.28


@pytest.mark.parametrize("content,needle", [
    (None, "does not exist"),
    ("", "empty"),
    ("{not json\n", "not JSON"),
    ('{"output": "x"}\n', "text"),
])
def test_score_bad_files_are_one_line(tmp_path, content, needle):
    path = tmp_path / "g.jsonl"
    if content is not None:
        path.write_text(content)
    p = subprocess.run([sys.executable, "-m", "decodebench", "score", f"generations={path}", "scorers=text",
                        "logger=none"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_score_unknown_scorer_says_did_you_mean(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"text": "a b c"}\n')
    p = subprocess.run([sys.executable, "-m", "decodebench", "score", f"generations={tmp_path}/g.jsonl",
                        "scorers.names=[distnct]", "logger=none"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "did you mean" in p.stderr and len(p.stderr.strip().splitlines()) == 1
