"""GitHub markdown of the blocks a command shows (render/blocks.py): to paste into a pull request.

Tables are GitHub tables (a header row, a delimiter row with the numbers' columns right-aligned, one row
per row), lines are paragraphs, styled text is bold; every character markdown would read as syntax is
escaped, so a name from a file stays text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fdoverlap_cli.render.blocks import DIM, Block, Cell, Section, Table, Text

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!])")


def escape(s: str) -> str:
    """`s` with every markdown metacharacter escaped (and no line break)."""
    return _SPECIAL.sub(r"\\\1", s.replace("\n", " "))


def inline(cell: Cell) -> str:
    """A line or cell: escaped, styled pieces (not dim ones) in bold."""
    if isinstance(cell, str):
        return escape(cell)
    out = []
    for piece, style in cell.pieces:
        strong = (style or cell.style) not in ("", DIM) and piece.strip()
        out.append(f"**{escape(piece)}**" if strong else escape(piece))
    return "".join(out)


def table(t: Table) -> str:
    """A GitHub table; an empty header cell stays a cell."""
    lines = []
    if t.title:
        lines += [f"**{escape(t.title)}**", ""]
    lines.append("| " + " | ".join(escape(c.header) for c in t.columns) + " |")
    lines.append("|" + "|".join("---:" if c.right else "---" for c in t.columns) + "|")
    lines += ["| " + " | ".join(inline(c) for c in row) + " |" for row in t.rows]
    if t.rows_note:
        lines += ["", escape(t.rows_note)]
    return "\n".join(lines)


def blocks(items: Iterable[Block]) -> str:
    """The blocks, one paragraph or table each, a blank line between them."""
    return "\n\n".join(inline(b) if isinstance(b, Text) else table(b) for b in items)


def document(title: str, sections: Iterable[Section]) -> str:
    """A title, then each section: its heading (none when empty) and its blocks."""
    parts = [f"### {escape(title)}"] if title else []
    for s in sections:
        if s.heading:
            parts.append(f"#### {escape(s.heading)}")
        if s.blocks:
            parts.append(blocks(s.blocks))
    return "\n\n".join(parts) + "\n"
