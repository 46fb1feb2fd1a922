"""What every leaderboard plot module shares: the `Plot` record, PNG bytes of a figure, colours per strategy."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decodebench.report.model import Row


@dataclass
class Plot:
    title: str
    caption: str
    png: bytes


def _png(fig, tight: bool = True) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _colors(rows: list["Row"]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    names = list(dict.fromkeys(r.strategy for r in rows))
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}
