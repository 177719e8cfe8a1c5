"""What a command shows, as plain blocks that every output draws: lines of styled text and tables.

The run and nsys renderers build their lines and tables once, as blocks, from the derived objects (cells
from render/cells.py, labels from measure/catalog.py); the terminal (`to_console`, Rich), GitHub markdown
(render/markdown.py) and HTML (render/html.py) each draw the same blocks, so no output computes or
formats a number of its own. Text in a block is plain: a name from a file is text, never markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text as RichText

BOLD, DIM, OK, FAIL, WARN, ACCENT = "bold", "dim", "ok", "fail", "warn", "accent"
_RICH_STYLE = {BOLD: "bold", DIM: "dim", OK: "green", FAIL: "red", WARN: "yellow", ACCENT: "cyan", "": ""}


@dataclass(frozen=True)
class Text:
    """One line (or one cell): pieces of text, each with a style ('' plain, BOLD, DIM, OK, FAIL, WARN, ACCENT)."""

    pieces: tuple[tuple[str, str], ...] = ()
    style: str = ""  # the whole line's style, under its pieces'

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.pieces)

    def __str__(self) -> str:
        return self.plain


Cell = str | Text


def text(*parts: str | tuple[str, str], style: str = "") -> Text:
    """A Text of `parts`: a str is plain, a (text, style) pair styled."""
    return Text(tuple((p, "") if isinstance(p, str) else p for p in parts), style)


def note(line: str) -> Text:
    """`note: LINE`, as every command prints a note."""
    return text(("note:", WARN), " " + line)


def warning(line: str) -> Text:
    """`warning: LINE`."""
    return text(("warning:", WARN), " " + line)


def plain(cell: Cell) -> str:
    """A cell's text without its styles."""
    return cell if isinstance(cell, str) else cell.plain


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers: right-aligned
    max_width: int | None = None  # on a terminal a longer cell is cut with an ellipsis (the HTML keeps it whole)


@dataclass(frozen=True)
class Table:
    """A table: its columns, rows of cells (str or Text), an optional title."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...] = ()
    title: str = ""
    whole: bool = False  # on a terminal: at its natural width, wider than the console if need be
    rows_note: str = ""  # a line after the table (e.g. '… and 12 more')
    name: str = ""  # what the table is (HTML: its class, e.g. `summary`, `per-step`)

    def header(self) -> list[str]:
        return [c.header for c in self.columns]

    def plain_rows(self) -> list[list[str]]:
        return [[plain(c) for c in row] for row in self.rows]


def table(columns: Sequence[Column | str], rows: Iterable[Sequence[Cell]], **kw: object) -> Table:
    """A Table; a column given as a str is a left-aligned column of that header."""
    cols = tuple(c if isinstance(c, Column) else Column(c) for c in columns)
    return Table(cols, tuple(tuple(r) for r in rows), **kw)  # type: ignore[arg-type]


Block = Text | Table


@dataclass
class Section:
    """A heading and its blocks (HTML: a section; markdown: a heading; the terminal prints the blocks alone)."""

    heading: str
    blocks: list[Block] = field(default_factory=list)
    collapsed: bool = False  # HTML: in a <details> that opens on a click (long per-step tables)
    svg: str = ""  # HTML: a figure, inline SVG


def _rich_text(t: Cell) -> RichText:
    if isinstance(t, str):
        return RichText(t)
    out = RichText(style=_RICH_STYLE[t.style])
    for piece, style in t.pieces:
        out.append(piece, style=_RICH_STYLE[style])
    return out


def _rich_table(t: Table) -> RichTable:
    out = RichTable(title=t.title or None, title_justify="left", show_edge=False, header_style="bold")
    for c in t.columns:
        if c.max_width:
            out.add_column(c.header, justify="right" if c.right else "left", overflow="ellipsis", max_width=c.max_width)
        else:
            out.add_column(c.header, justify="right" if c.right else "left")
    for row in t.rows:
        out.add_row(*(_rich_text(c) for c in row))
    return out


def _print_whole(console: Console, table: RichTable) -> None:
    """A table at its natural width, wider than the console if need be (nsys stats prints it so): a number is
    never cut to fit."""
    natural = console.measure(table, options=console.options.update_width(1000)).maximum
    if natural <= console.width:
        console.print(table)
        return
    wide = Console(
        file=console.file,
        width=natural,
        color_system=console.color_system,  # type: ignore[arg-type]
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )
    wide.print(table)


def to_console(blocks: Iterable[Block], console: Console | None = None) -> None:
    """Print `blocks` on a terminal (or wherever `console` writes)."""
    console = console or Console()
    for b in blocks:
        if isinstance(b, Text):
            console.print(_rich_text(b), soft_wrap=False)
            continue
        rich = _rich_table(b)
        if b.whole:
            _print_whole(console, rich)
        else:
            console.print(rich)
        if b.rows_note:
            console.print(RichText(b.rows_note, style="dim"))
