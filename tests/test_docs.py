"""The docs cannot drift: generated tables equal their sources, named files exist, the examples run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import ROOT

README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
# docs pages that other work adds at merge time; each leaves this set when its file lands in docs/
PENDING_PAGES: set[str] = set()


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def code_blocks(text: str, lang: str) -> list[str]:
    """The bodies of the fenced blocks opened with ```lang (lang "" for plain fences), dedented."""
    blocks, body, opened = [], None, None
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if body is None and fence:
            body, opened = [], line.strip()[3:]
        elif body is not None and fence:
            if opened == lang:
                blocks.append(textwrap.dedent("\n".join(body) + "\n"))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def test_generated_tables_equal_the_parameter_table_and_the_strategy_files():
    assert gen_docs().stale() == [], "run: python scripts/gen_docs.py"


def test_a_new_parameter_row_makes_the_parameters_page_stale(monkeypatch):
    from decodebench.decoding import params
    from decodebench.decoding.params.table import _f

    g = gen_docs()
    monkeypatch.setattr(params, "PARAMS", params.PARAMS + (_f("top_a", hi=1.0, transform="top_a"),))
    assert "| `top_a` | [0, 1) |" in g.parameters_block()
    assert "docs/parameters.md" in g.stale()


def test_every_shipped_strategy_has_its_row_and_description():
    text = (ROOT / "docs" / "strategies.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "conf" / "strategy").glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{path.name}: its first line describes the strategy"
        assert f"| `{path.stem}` | " in text


def test_readme_fits_on_a_screen():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_links_of_the_readme_and_contributing_point_to_files():
    for page in (README, CONTRIBUTING):
        links = relative_links(page.read_text(encoding="utf-8"))
        assert links, page
        missing = [link for link in links if not (ROOT / link).exists() and link not in PENDING_PAGES]
        assert missing == [], f"{page.name} links to files that do not exist: {missing}"


def named_paths(text: str) -> set[str]:
    """Paths a page names: `dir/file.py` and `file.py` tokens."""
    return set(re.findall(r"(?<![\w/.])(?:[\w]+/)*[\w]+\.py\b", text))


def test_every_module_the_architecture_names_exists_and_every_module_is_named():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    repo = [p for d in ("decodebench", "scripts", "tests") for p in (ROOT / d).rglob("*.py")] + [ROOT / "setup.py"]
    known = {p.name for p in repo} | {str(p.relative_to(ROOT)) for p in repo}
    known |= {str(p.relative_to(ROOT / "decodebench")) for p in repo if p.is_relative_to(ROOT / "decodebench")}
    for text, where in ((page, "docs/architecture.md"), (readme, "README.md")):
        unknown = sorted(n for n in named_paths(text) if n not in known)
        assert unknown == [], f"{where} names modules that do not exist: {unknown}"
    assert "ModelRunner" not in page + readme
    said = {n.split("/")[-1] for n in named_paths(page)}
    package = [p for p in repo if p.is_relative_to(ROOT / "decodebench") and p.name != "__init__.py"
               and not {"lm_eval_tasks", "hf_evaluate"} & set(p.parts)]
    unnamed = sorted(str(p.relative_to(ROOT)) for p in package if p.name not in said)
    assert unnamed == [], f"docs/architecture.md does not say what these modules hold: {unnamed}"


def test_the_readme_and_the_architecture_page_draw_the_same_picture():
    picture = lambda text: next(b for b in code_blocks(text, "") if "command line" in b)  # noqa: E731
    readme, page = (p.read_text(encoding="utf-8") for p in (README, ROOT / "docs" / "architecture.md"))
    assert picture(readme) == picture(page)


def test_readme_library_example_runs_and_rows_do_not_depend_on_the_batch(embedded, monkeypatch, capsys):
    from decodebench import models
    from decodebench.decoding import generate

    (block,) = code_blocks(README.read_text(encoding="utf-8"), "python")
    assert len(block.strip().splitlines()) <= 12
    monkeypatch.setattr(models, "load_model", lambda cfg, **kw: embedded)  # the same model, loaded once
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    printed = capsys.readouterr().out.splitlines()
    tok = embedded[1]
    assert printed == [f"{p} -> {tok.decode(o.token_ids)} [{o.finish_reason}]" for p, o in zip(ns["prompts"], ns["outs"])]
    alone = [generate(*embedded, [r], ns["spec"], batch_size=1)[0][0].token_ids for r in ns["reqs"]]
    assert [o.token_ids for o in ns["outs"]] == alone and all(alone)


def test_library_page_example_gives_the_results_it_states():
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    block = code_blocks(text, "python")[0]
    ns: dict = {}
    exec(compile(block, "docs/library.md", "exec"), ns)
    stated = dict(re.findall(r"^# (x|chain) *= (.*?)(?:[ \t]+#.*)?$", block, flags=re.M))
    inf = float("inf")
    assert torch.equal(ns["x"], torch.tensor(eval(stated["x"], {"inf": inf})))
    assert ns["chain"] == eval(stated["chain"])
    (tokens,) = re.findall(r"# tensor\((\[.*?\])\)", block)
    assert ns["tokens"].tolist() == eval(tokens)


def test_contributing_sampler_does_what_its_docstring_says():
    from decodebench.decoding.transforms.filters import column

    fn = next(b for b in code_blocks(CONTRIBUTING.read_text(encoding="utf-8"), "python") if "def top_a" in b)
    ns = {"Tensor": torch.Tensor, "column": column, "torch": torch}
    exec(compile(fn, "CONTRIBUTING.md", "exec"), ns)
    x = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]]).log()
    out = ns["top_a"](x, torch.tensor([0.5, 0.0]))
    assert torch.isinf(out[0, 2]) and torch.equal(out[0, :2], x[0, :2]) and torch.equal(out[1], x[1])


def test_contributing_scorer_registers_and_scores(tmp_path):
    """In its own process: a scorer registered here would join every other test's `scorers=all`."""
    block = next(b for b in code_blocks(CONTRIBUTING.read_text(encoding="utf-8"), "python") if "chars_fn" in b)
    (tmp_path / "chars.py").write_text(block, encoding="utf-8")
    check = textwrap.dedent(f"""
        import runpy
        import decodebench.scorers as S
        runpy.run_path({str(tmp_path / "chars.py")!r}, run_name="decodebench.scorers.chars")
        recs = [{{"prompt_id": "a", "text": "abc"}}, {{"prompt_id": "b", "text": "hello"}}]
        m = S.resolve_scorers({{"names": ["chars"], "bootstrap": {{"samples": 0}}}}).score(recs, progress=False)
        print(m["chars"])
    """)
    p = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip().splitlines()[-1]) == 4.0


def test_the_site_builds_strictly(tmp_path):
    """Broken links or anchors between pages fail (`mkdocs build --strict`, as CI runs it)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (tmp_path / "parameters" / "index.html").is_file()
