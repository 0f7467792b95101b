"""Pure: the boxed table of the design's examples, fitted to a width, optionally coloured.

::

    ┌──────────────┬─────────┐
    │ Name         │ Status  │
    ├──────────────┼─────────┤
    │ proj1-hourly │ Active  │
    ├──────────────┼─────────┤
    │ proj1-yearly │ PAUSED  │
    └──────────────┴─────────┘

Columns are as wide as their widest cell. Given ``max_width`` (a terminal's width), the widest
columns give up characters first, down to ``MIN_COLUMN``; cut cells end with ``…``. Colour is a
``Styled`` cell's ANSI style, applied after the widths are computed so it never shifts a border.
``ascii=True`` draws with ``+-|`` for terminals that cannot encode box-drawing characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

MIN_COLUMN = 6

# ANSI SGR codes by style name.
STYLES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "bold-red": "1;31",
}


@dataclass(frozen=True)
class Styled:
    """A cell with a style (a key of ``STYLES``), shown only when colour is on."""

    text: str
    style: str | None = None

    def __str__(self) -> str:
        return self.text


Cell = "str | Styled"


def paint(text: str, style: str | None, color: bool) -> str:
    if not color or not style or not text:
        return text
    return f"\x1b[{STYLES[style]}m{text}\x1b[0m"


def text_width(text: str) -> int:
    """Columns a string takes on a terminal (wide East Asian characters count two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending in ``…`` when cut."""
    if text_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = text_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _fit(natural: list[int], max_width: int | None, overhead: int) -> list[int]:
    widths = list(natural)
    if max_width is None:
        return widths
    budget = max_width - overhead
    while sum(widths) > budget:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= MIN_COLUMN:
            break  # cannot shrink further; let the terminal wrap
        widths[widest] -= 1
    return widths


def render(headers: Sequence[str], rows: Sequence[Sequence[object]], *, color: bool = False,
           max_width: int | None = None, ascii: bool = False, row_lines: bool = True) -> str:
    """The table as text (trailing newline included); an empty ``rows`` still draws the header."""
    cells = [[c if isinstance(c, Styled) else Styled("" if c is None else str(c)) for c in row]
             for row in rows]
    cells = [[Styled(" ".join(c.text.split()) if "\n" in c.text else c.text, c.style) for c in row]
             for row in cells]
    natural = [text_width(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            natural[i] = max(natural[i], text_width(c.text))
    overhead = 3 * len(headers) + 1  # "│ " + " │ " ... + " │"
    widths = _fit(natural, max_width, overhead)
    h, v = ("-", "|") if ascii else ("─", "│")
    corners = ("+++", "+++", "+++") if ascii else ("┌┬┐", "├┼┤", "└┴┘")

    def line(kind: int) -> str:
        left, mid, right = corners[kind]
        return left + mid.join(h * (w + 2) for w in widths) + right

    def row_text(row: Sequence[Styled], header: bool = False) -> str:
        parts = []
        for c, w in zip(row, widths):
            text = cut(c.text, w)
            pad = " " * (w - text_width(text))
            parts.append(" " + paint(text, "bold" if header else c.style, color) + pad + " ")
        return v + v.join(parts) + v

    out = [line(0), row_text([Styled(x) for x in headers], header=True), line(1)]
    for i, row in enumerate(cells):
        if i and row_lines:
            out.append(line(1))
        out.append(row_text(row))
    out.append(line(2))
    return "\n".join(out) + "\n"
