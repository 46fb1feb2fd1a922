"""Registration without import side effects: the built-in search methods and transforms are listed by module
path and imported on the first lookup that needs them; their names are known before; a plugin cannot take a
built-in's name."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from decodebench.decoding.search.methods import BUILTIN_METHODS, METHODS, SearchMethod
from decodebench.decoding.transforms.registry import BUILTIN_TRANSFORMS, ORDERS, TRANSFORMS
from decodebench.registry import Registry
from tests.conftest import ROOT


def run(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip()


def test_importing_the_library_imports_no_search_method_and_a_lookup_imports_one():
    out = run("""
        import sys
        import decodebench.decoding as d
        from decodebench.decoding.search.methods import METHODS
        searches = lambda: sorted(m for m in sys.modules if m.startswith("decodebench.decoding.search.")
                                  and m.rsplit(".", 1)[1] not in ("methods", "spec", "votes"))
        print(searches(), "beam" in METHODS, "dola" in METHODS.names())
        METHODS.get("diverse_beam")
        print(searches())
    """)
    assert out.splitlines() == ["[] True True",
                                "['decodebench.decoding.search.beam', 'decodebench.decoding.search.diverse_beam']"]


def test_a_lookup_imports_the_module_of_the_transform_it_names():
    out = run("""
        import sys
        from decodebench.decoding.transforms.api import process_logits
        from decodebench.decoding.transforms.registry import TRANSFORMS
        loaded = lambda: [m.rsplit(".", 1)[1] for m in ("decodebench.decoding.transforms.grammar",
                                                       "decodebench.decoding.transforms.watermark") if m in sys.modules]
        print(loaded(), "grammar" in TRANSFORMS.names())
        TRANSFORMS.get("grammar")
        print(loaded())
    """)
    # the package's face imports the sampler functions it exports; grammars and watermarks it does not
    assert out.splitlines() == ["[] True", "['grammar']"]


def test_every_builtin_name_is_listed_by_the_module_that_registers_it():
    assert set(BUILTIN_TRANSFORMS) == set(ORDERS["hf"]) == set(ORDERS["vllm"]) == set(ORDERS["llamacpp"])
    for name, module in BUILTIN_TRANSFORMS.items():
        assert TRANSFORMS.get(name).fn.__module__ in (module, "decodebench.decoding.transforms.filters",
                                                      "decodebench.decoding.transforms.penalties"), name
    for name, module in BUILTIN_METHODS.items():
        assert METHODS.get(name).validate.__module__ == module, name


def test_a_builtin_name_cannot_be_taken():
    with pytest.raises(ValueError, match="'speculative' is already registered"):
        METHODS.register("speculative", SearchMethod(name="speculative"))
    reg: Registry = Registry("thing")
    reg.register_lazy("x", "decodebench.no_such_module_registers_x")
    with pytest.raises(ValueError, match="'x' is already registered"):
        reg.register("x", object())
    assert reg.names() == ["x"] and "x" in reg


def test_a_lazy_module_that_does_not_register_its_name_is_an_error():
    reg: Registry = Registry("thing")
    reg.register_lazy("x", "decodebench.registry")
    with pytest.raises(RuntimeError, match="module decodebench.registry does not register thing 'x'"):
        reg.get("x")
