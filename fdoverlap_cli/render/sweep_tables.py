"""Rich rendering of a sweep (`sweep`, `report sweep.json`): one row a point, from the typed `SweepView`.

Columns: the axes' values, then the speedup, each path's GPU busy and exposed host time per step (labels and
units from measure/catalog.py), the token check and the point's status. On the CPU the GPU-only columns say
they are not measurable, as a run's table does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.schema import PATHS
from fdoverlap_cli.render.cells import MISSING, NOT_MEASURABLE_ON_CPU, value
from fdoverlap_cli.sweep.grid import TRACE
from fdoverlap_cli.sweep.record import DONE, SweepView

SPEEDUP = catalog.COMPARISON_METRICS[0]
GPU_BUSY = catalog.path_metric("gpu_busy")
EXPOSED = catalog.path_metric("per_step.exposed_ns")
_TOKENS_STYLE = {"same": "green", "differ": "red", "check failed": "red"}


def _cell(v: Any) -> str:
    return {True: "on", False: "off", None: "none"}[v] if isinstance(v, bool | None) else str(v)


def _pair(values: dict[str, float | None], unit: str) -> str:
    """sync → overlap, each in `unit`."""
    return " → ".join(value(values.get(p), unit) for p in PATHS)


def print_sweep(view: SweepView, console: Console | None = None, title: str | None = None) -> None:
    """The sweep's table, a line on what the CPU cannot measure, and the failed points."""
    console = console or Console()
    if title:
        console.print(f"[b]{escape(title)}[/b]")
    table = Table(show_edge=False, header_style="bold")
    for axis in view.axes:
        table.add_column(axis, justify="right", no_wrap=True)
    table.add_column(SPEEDUP.label, justify="right", no_wrap=True)
    table.add_column("GPU busy\nsync → overlap", justify="right", no_wrap=True)
    table.add_column("exposed / step\nsync → overlap", justify="right", no_wrap=True)
    table.add_column("tokens", no_wrap=True)
    for r in view.rows:
        gpu = r.measurable
        cells = [escape(Path(str(r.key[a])).name if a == TRACE else _cell(r.key.get(a))) for a in view.axes]
        cells.append(f"{value(r.speedup, SPEEDUP.unit)}×" if r.speedup is not None else MISSING)
        cells.append(_pair(r.gpu_busy, GPU_BUSY.unit) if gpu else MISSING)
        cells.append(_pair(r.exposed_ns, "us") if gpu else MISSING)
        style = _TOKENS_STYLE.get(r.tokens)
        check = f"[{style}]{r.tokens}[/{style}]" if style else r.tokens
        cells.append(check if r.status == DONE else f"{check} [yellow]({r.status})[/yellow]")
        table.add_row(*cells)
    console.print(table)
    if view.rows and not view.measurable:
        console.print(
            f"{NOT_MEASURABLE_ON_CPU} (every copy and wait is synchronous there): {SPEEDUP.label}, "
            f"{GPU_BUSY.label}, {EXPOSED.label} (exposed / step); null in the JSON; the tokens are checked at every "
            "point"
        )
    for line in view.failures():
        console.print(f"[red]failed:[/red] {escape(line)}")


def sweep_summary(view: SweepView, file: str | None = None) -> dict[str, Any]:
    """The printed table as JSON (the view's rows), and where the sweep's file is."""
    return {"file": file, **view.to_dict(), "failures": view.failures()}
