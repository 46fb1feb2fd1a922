"""Your own components, by name: modules that register transforms, stopping criteria, scorers or search methods.

Two ways in, both imported before the config is validated:
- `plugins=[my_module, pkg.other]` on the command line (importable from the working directory or
  PYTHONPATH);
- the entry-point group `decodebench.plugins` in an installed package's metadata, e.g. in its
  pyproject.toml: `[project.entry-points."decodebench.plugins"] mine = "my_package.decoding"`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Iterable

_loaded: set[str] = set()


def _origin(e: BaseException) -> str:
    """' (at file.py:3)': the innermost frame of the error, so the user knows which line to look at."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import entry-point plugins and the named modules once each; returns the modules imported now."""
    names = [ep.value.split(":")[0] for ep in entry_points(group="decodebench.plugins")]
    names += list(modules)
    done = []
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"plugins: cannot import {name!r} ({e}); check the module name and that it is on "
                             "PYTHONPATH or in the working directory") from None
        except Exception as e:  # noqa: BLE001 - the plugin's own bug: one line that says whose it is
            where = _origin(e)
            raise ValueError(f"plugins: importing {name!r} raised {type(e).__name__}: {' '.join(str(e).split())}"
                             f"{where}; fix the plugin or remove it from plugins") from None
        _loaded.add(name)
        done.append(name)
    return done
