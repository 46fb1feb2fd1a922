"""One small registry for strategies, transforms and scorers.

Register by name; a duplicate name is an error; an unknown name says "did you mean ...".
Configs choose components by name, never by import path. A built-in entry may be listed lazily, by the path
of the module that registers it (`register_lazy`, as lm-eval's registry does): the module is imported on
the first lookup that needs it, so the registry's own module imports none of its entries' modules.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; str() is a one-line message for the user."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> the module that registers it when imported

    def register_lazy(self, name: str, module: str) -> None:
        """List `name` as registered by importing `module` (imported on the first lookup that needs it)."""
        if name in self._items or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._lazy[name] = module

    def _load(self, name: str) -> None:
        module = self._lazy.pop(name, None)
        if module is not None and name not in self._items:
            importlib.import_module(module)
            if name not in self._items:
                raise RuntimeError(f"module {module} does not register {self.kind} {name!r}")

    def _load_all(self) -> None:
        for name in list(self._lazy):
            self._load(name)

    def register(self, name: str, obj: T | None = None):
        """`reg.register("x", obj)` or `@reg.register("x")` on a function or class."""

        def add(o: T) -> T:
            # a lazy name is taken by its own module only (which is in sys.modules while it runs)
            if name in self._items or (name in self._lazy and self._lazy[name] not in sys.modules):
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._lazy.pop(name, None)
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        self._load(name)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return did_you_mean(self.kind, name, list(self._items) + list(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted({*self._items, *self._lazy})

    def items(self) -> list[tuple[str, T]]:
        self._load_all()
        return sorted(self._items.items())


def did_you_mean(kind: str, name: str, choices: list[str]) -> str:
    """The same one-line message for names that live outside a Registry (config group options)."""
    choices = sorted(set(choices))  # a name offered by two sources (a scorer and its metric) is listed once
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(choices) or 'none yet'})"


