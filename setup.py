"""The packages, and the one thing pyproject.toml cannot say: the top-level conf/ ships inside the wheel as
`decodebench/conf` (a package_dir mapping, so there is one copy of the configs, not two).
`decodebench.config.conf_dir()` finds it there when installed, and conf/ itself in a checkout.

Data folders (conf/*, decodebench/data, the evaluate modules) are listed as packages: setuptools warns
about folders that Python could import but the packages list leaves out."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

CONF = [".".join(("decodebench", "conf") + d.relative_to("conf").parts)
        for d in sorted([Path("conf"), *Path("conf").rglob("*")]) if d.is_dir() and d.name != "__pycache__"]

# lm-eval task folders shipped with decodebench (their YAML, data and helper modules)
TASKS = [".".join(d.parts) for d in sorted(Path("decodebench/tasks/lm_eval_tasks").glob("*")) if d.is_dir()
         and d.name != "__pycache__"]

setup(
    packages=find_namespace_packages(include=["decodebench", "decodebench.*"], exclude=["*__pycache__"]) + CONF,
    package_dir={"decodebench.conf": "conf"},
    package_data={"decodebench.data": ["*.jsonl"], **{pkg: ["*.yaml"] for pkg in CONF},
                  **{pkg: ["*.yaml", "*.jsonl", "*.py"] for pkg in TASKS}},
)
