"""CONTRIBUTING.md's "Add a sampler" worked example is true: done as it says, on a copy of the package, top-a
runs through `process_logits` and the chain, and its row brings the range check. The edits are taken from the
page itself (its code blocks and the `BUILTIN_TRANSFORMS` entry it quotes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

from tests.conftest import ROOT
from tests.test_docs import CONTRIBUTING, code_blocks

CHECK = textwrap.dedent("""
    import torch
    from decodebench.decoding import SamplingParams, process_logits
    from decodebench.decoding.transforms.top_a import top_a

    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    out, names = process_logits(x, top_a=0.3, order=("top_k", "top_a"), top_k=20, return_chain=True)
    assert names == ["top_k", "top_a"], names
    ref = top_a(process_logits(x, top_k=20), 0.3)
    assert torch.equal(out, ref)
    assert torch.isinf(out).sum() > torch.isinf(process_logits(x, top_k=20)).sum()  # it did cut
    assert process_logits(x, top_a=0.3, return_chain=True)[1] == ["top_a"]  # in the named order "hf"
    try:
        SamplingParams(top_a=1.5)
    except ValueError as e:
        print("refused:", e)
""")


def _section(text: str) -> str:
    start = text.index("## Add a sampler")
    return text[start:text.index("\n## ", start + 1)]


def test_the_add_a_sampler_steps_make_a_working_sampler(tmp_path):
    page = _section(CONTRIBUTING.read_text(encoding="utf-8"))
    fn, binder, row = code_blocks(page, "python")[:3]
    assert "def top_a" in fn and "@builtin" in binder and row.strip().startswith('_f("top_a"')
    (entry,) = re.findall(r'`("top_a": _T \+ "top_a")`', page)
    pkg = tmp_path / "decodebench"
    shutil.copytree(ROOT / "decodebench", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    lib = pkg / "decoding"
    header = ("from __future__ import annotations\n\nfrom torch import Tensor\n\n"
              "from decodebench.decoding.transforms.filters import column\n")
    (lib / "transforms" / "top_a.py").write_text(header + "\n\n" + fn + "\n\n" + binder, encoding="utf-8")
    table = lib / "params" / "table.py"
    text = table.read_text(encoding="utf-8")
    anchor = next(line for line in text.splitlines() if line.strip().startswith('_f("min_p"'))
    table.write_text(text.replace(anchor, anchor + "\n    " + row.strip()), encoding="utf-8")
    registry = lib / "transforms" / "registry.py"
    text = registry.read_text(encoding="utf-8")
    start = text.index("ORDERS: dict")
    end = text.index("\n}\n", start)
    orders = text[start:end]
    orders, n = re.subn(r'"min_p",(\s)', r'"min_p", "top_a",\1', orders)
    assert n == 3  # one place in each named order, after min_p
    text = text[:start] + orders + text[end:]
    text = text.replace('"grammar": _T + "grammar",', f'"grammar": _T + "grammar", {entry},')
    registry.write_text(text, encoding="utf-8")
    p = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "refused: top_a must be in [0, 1] (0 = off), got 1.5"
