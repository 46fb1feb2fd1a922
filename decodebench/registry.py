"""One small registry for strategies, transforms and scorers.

Register by name; a duplicate name is an error; an unknown name says "did you mean ...".
Configs choose components by name, never by import path.
"""

from __future__ import annotations

import difflib
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

    def register(self, name: str, obj: T | None = None):
        """`reg.register("x", obj)` or `@reg.register("x")` on a function or class."""

        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return did_you_mean(self.kind, name, list(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def did_you_mean(kind: str, name: str, choices: list[str]) -> str:
    """The same one-line message for names that live outside a Registry (config group options)."""
    choices = sorted(set(choices))  # a name offered by two sources (a scorer and its metric) is listed once
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(choices) or 'none yet'})"


