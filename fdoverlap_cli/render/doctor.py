"""Rich rendering of `fdoverlap doctor` and `fdoverlap ops build`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fdoverlap_cli.doctor import Diagnosis
from fdoverlap_cli.ops import BuildInfo

_MARKS = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: ""}
_WARNING = "[yellow]warning[/yellow]"


def render_doctor(diagnosis: Diagnosis, console: Console | None = None) -> None:
    """One table of checks; when the tool can run here, a line that says so (otherwise the CLI's error line does)."""
    console = console or Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_column(no_wrap=True)
    for check in diagnosis.checks:
        table.add_row(check.name, escape(check.value), _WARNING if check.warning else _MARKS[check.ok])
    console.print(table)
    if diagnosis.can_run:
        console.print("[green]fdoverlap can run here[/green]")


def render_build(info: BuildInfo, console: Console | None = None) -> None:
    """The op library build: cached or just built, where, for what."""
    console = console or Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("op library", "cached" if info.cached else f"built in {info.seconds:.1f} s")
    table.add_row("path", escape(str(info.path)))
    table.add_row("key", info.key)
    table.add_row("target", f"CUDA {info.arch}" if info.cuda else "CPU")
    table.add_row("paddle", info.paddle_version)
    if info.cached:
        table.add_row("built in", f"{info.seconds:.1f} s")
    console.print(table)
