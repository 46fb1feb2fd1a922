"""A user's own transform, registered in their module and used from the command line by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from decodebench import results
from tests.conftest import ROOT

PLUGIN = '''
import torch
from decodebench.decoding import register_transform

@register_transform("force_token", params=("force_token",), neutral=(-1.0,))
def force_token(logits, force_token):
    # keep only the column named by the row's parameter (rows at the neutral -1 keep everything)
    cols = torch.arange(logits.shape[-1], device=logits.device)[None, :]
    keep = (cols == force_token[:, None].long()) | (force_token[:, None] < 0)
    return logits.masked_fill(~keep, float("-inf"))
'''


def test_user_transform_from_the_command_line(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "decodebench", "model=tiny", "plugins=[my_plugin]", "strategy=sample",
                        "strategy.extra.force_token=77", "dataset.limit=3", "strategy.max_new_tokens=5",
                        "logger=none", "scorers=text", "progress=false", f"hydra.run.dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    recs = results.read_generations(out)
    assert recs and all(r.token_ids == [77] * 5 for r in recs)
    info = json.loads((out / "run.json").read_text())
    assert info["strategy"]["chain"] == ["force_token"]


def test_unknown_plugin_module_is_one_line():
    p = subprocess.run([sys.executable, "-m", "decodebench", "plugins=[no_such_module_xyz]", "logger=none"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "plugins" in p.stderr and len(p.stderr.strip().splitlines()) == 1
