"""Hugging Face `evaluate` modules over decodebench's scorers, loaded offline by local path:

    evaluate.load("<repo>/decodebench/hf_evaluate/decodebench_text")
    evaluate.load("<repo>/decodebench/hf_evaluate/decodebench_perplexity")

evaluate copies each module file into its cache and imports it from there, so the modules import
decodebench as an installed package (`pip install -e .`), never relatively.
"""

from pathlib import Path

MODULES = Path(__file__).resolve().parent


def module_path(name: str) -> str:
    """Local path to give `evaluate.load` for one of this folder's modules."""
    path = MODULES / name
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in MODULES.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no evaluate module {name!r} here (known: {', '.join(known)})")
    return str(path)
