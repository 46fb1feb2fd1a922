"""The house rules a reader relies on: short files, packages that show the architecture, imports that go one
way (README, "Architecture")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PKG = ROOT / "decodebench"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """decodebench modules that `name` imports anywhere in its body (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_file_over_the_limit():
    long = {str(f.relative_to(ROOT)): n for f in PKG.rglob("*.py") if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_sweeps_and_reports_live_in_their_packages():
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name.startswith(("sweep", "report", "preflight", "score")))
    assert not flat
    assert {p.name for p in (PKG / "cli").glob("*.py")} >= {"verbs.py", "entry.py", "preflight.py", "score.py"}


def import_graph() -> dict[str, set[str]]:
    """decodebench module -> the decodebench modules it imports (anywhere in its body). A package's __init__
    importing its own modules is how it exports them, not an edge of the design (see the test below)."""
    known = modules()
    graph = {n: imports_of(n, p, known) for n, p in known.items()}
    return {n: {m for m in deps if not (n != "decodebench" and m.startswith(n + "."))} for n, deps in graph.items()}


def test_no_import_cycle():
    graph = import_graph()
    done, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in done:
            return
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        stack.pop()
        done.add(n)

    for n in sorted(graph):
        visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_library_module_imports_a_package_it_lives_in():
    """What makes dropping a package's edges to its own modules safe: inside the decoding library, a module
    imports the module it needs, never the face of a package above it (whose __init__ imports that module)."""
    graph = import_graph()
    up = {n: m for n, deps in graph.items() if n.startswith("decodebench.decoding.")
          for m in deps if m != "decodebench" and n.startswith(m + ".")}
    assert not up, f"modules importing their own package's __init__: {up}"


def test_the_decoding_library_shows_its_parts():
    lib = PKG / "decoding"
    assert {p.name for p in lib.iterdir() if (p / "__init__.py").exists()} >= {"params", "transforms", "engine", "search"}
    assert sorted(p.name for p in lib.glob("*.py")) == ["__init__.py", "sampling.py"]


def test_the_parameter_table_is_a_leaf():
    """params/ imports nothing else of decodebench: the checks that consult a registry are named by path."""
    graph = import_graph()
    out = {n: sorted(m for m in deps if not m.startswith("decodebench.decoding.params"))
           for n, deps in graph.items() if n.startswith("decodebench.decoding.params")}
    assert not any(out.values()), out
