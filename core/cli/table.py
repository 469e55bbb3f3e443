"""Aligned plain-text tables for the CLI.

Every listing prints through ``render_table``: a header row in capitals, then one line per
row, columns left-aligned and two spaces apart. A cell is the ``str`` of its value, with
line breaks and tabs turned into spaces so that one row stays one line (a description with
a newline must not break the columns); ``None`` is an empty cell.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]

_BLANKS = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


def _cell(value: object) -> str:
    return "" if value is None else str(value).translate(_BLANKS)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[_cell(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    for number, row in enumerate(cells[1:], start=1):
        if len(row) != len(headers):
            raise ValueError(f"table row {number} has {len(row)} cells for {len(headers)} columns")
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)
