"""Terminal output for the demo and ``serve``: aligned tables (Chinese included), and colour.

A Chinese character takes two columns in a terminal, so ``str.ljust`` misaligns any table that
mixes it with Latin text. Widths here come from :func:`unicodedata.east_asian_width`.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import TextIO

from hsq_refunds.money import format_fen as yuan

__all__ = ["Style", "display_width", "pad", "render_table", "yuan"]

_WIDE = frozenset({"W", "F"})
_ESC = "\x1b["


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide and full-width characters count two."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in {"Mn", "Me", "Cf"}:
            continue
        width += 2 if unicodedata.east_asian_width(char) in _WIDE else 1
    return width


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` columns (aligned right if ``right``)."""
    fill = " " * max(width - display_width(text), 0)
    return fill + text if right else text + fill


class Style:
    """ANSI colours, on only for a terminal and never with ``NO_COLOR`` set (no-color.org)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.enabled = (
            hasattr(stream, "isatty")
            and stream.isatty()
            and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb"
        )

    def _wrap(self, code: str, text: str) -> str:
        return f"{_ESC}{code}m{text}{_ESC}0m" if self.enabled and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


Cell = tuple[str, str]
"""A table cell: its plain text (which sets the width) and the same text as shown (coloured)."""


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str | Cell]],
    *,
    right: Sequence[int] = (),
    style: Style | None = None,
) -> str:
    """A table with a header rule; columns in ``right`` are right-aligned (amounts).

    Cells are plain strings or ``(plain, shown)`` pairs, so that colour codes never count
    towards a column's width.
    """
    cells = [[cell if isinstance(cell, tuple) else (cell, cell) for cell in row] for row in rows]
    widths = [display_width(header) for header in headers]
    for row in cells:
        for index, (plain, _shown) in enumerate(row):
            widths[index] = max(widths[index], display_width(plain))
    gap = "  "

    def line(row: Sequence[Cell]) -> str:
        parts = []
        for index, (plain, shown) in enumerate(row):
            fill = " " * (widths[index] - display_width(plain))
            parts.append(fill + shown if index in right else shown + fill)
        return gap.join(parts).rstrip()

    bold = style.bold if style else str
    header = line([(text, bold(text)) for text in headers])
    rule = gap.join("-" * width for width in widths)
    return "\n".join([header, rule, *(line(row) for row in cells)])
