"""A sweep's blocks (`sweep`, `report sweep.json`): one row a point, from the typed `SweepView`.

Columns: the axes' values, then the speedup, each path's GPU busy and exposed host time per step (labels and
units from measure/catalog.py), the token check and the point's status. On the CPU the GPU-only columns say
they are not measurable, as a run's table does. The terminal (Rich), --markdown and --html draw these blocks
(render/blocks.py), so every output holds the same cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.schema import PATHS
from fdoverlap_cli.render.blocks import BOLD, FAIL, OK, WARN, Block, Cell, Column, Table, table, text, to_console
from fdoverlap_cli.render.cells import MISSING, NOT_MEASURABLE_ON_CPU, value
from fdoverlap_cli.sweep.grid import TRACE
from fdoverlap_cli.sweep.record import DONE, SweepRow, SweepView

SPEEDUP = catalog.COMPARISON_METRICS[0]
GPU_BUSY = catalog.path_metric("gpu_busy")
EXPOSED = catalog.path_metric("per_step.exposed_ns")
_TOKENS_STYLE = {"same": OK, "differ": FAIL, "check failed": FAIL}


def axis_value(v: Any) -> str:
    """An axis value as a cell: on/off for a flag, none for an unset option."""
    return {True: "on", False: "off", None: "none"}[v] if isinstance(v, bool | None) else str(v)


def _pair(values: dict[str, float | None], unit: str) -> str:
    """sync → overlap, each in `unit`."""
    return " → ".join(value(values.get(p), unit) for p in PATHS)


def columns(view: SweepView) -> list[Column]:
    """The axes, then the measured quantities, the token check (and the status where not done)."""
    out = [Column(axis, right=True) for axis in view.axes]
    out += [
        Column(SPEEDUP.label, right=True),
        Column("GPU busy\nsync → overlap", right=True),
        Column("exposed / step\nsync → overlap", right=True),
        Column("tokens"),
    ]
    return out


def row_cells(view: SweepView, r: SweepRow) -> list[Cell]:
    """One point's cells: the compact summary of its run, as the sweep's table shows it."""
    gpu = r.measurable
    cells: list[Cell] = [Path(str(r.key[a])).name if a == TRACE else axis_value(r.key.get(a)) for a in view.axes]
    cells.append(f"{value(r.speedup, SPEEDUP.unit)}×" if r.speedup is not None else MISSING)
    cells.append(_pair(r.gpu_busy, GPU_BUSY.unit) if gpu else MISSING)
    cells.append(_pair(r.exposed_ns, "us") if gpu else MISSING)
    check = (r.tokens, _TOKENS_STYLE.get(r.tokens, ""))
    cells.append(text(check) if r.status == DONE else text(check, " ", (f"({r.status})", WARN)))
    return cells


def sweep_table(view: SweepView, rows: tuple[SweepRow, ...] | None = None, name: str = "sweep") -> Table:
    """The sweep's table (or of `rows` alone), at its natural width; `name`: what it is (HTML: its class)."""
    shown = view.rows if rows is None else rows
    return table(columns(view), [row_cells(view, r) for r in shown], whole=True, name=name)


def sweep_blocks(view: SweepView, title: str | None = None) -> list[Block]:
    """What `sweep` and `report sweep.json` print: the title, the table, what the CPU cannot measure, the
    failed points."""
    out: list[Block] = [text((title, BOLD))] if title else []
    out.append(sweep_table(view))
    if view.rows and not view.measurable:
        out.append(
            text(
                f"{NOT_MEASURABLE_ON_CPU} (every copy and wait is synchronous there): {SPEEDUP.label}, "
                f"{GPU_BUSY.label}, {EXPOSED.label} (exposed / step); null in the JSON; the tokens are checked at "
                "every point"
            )
        )
    out += [text(("failed:", FAIL), f" {line}") for line in view.failures()]
    return out


def print_sweep(view: SweepView, console: Console | None = None, title: str | None = None) -> None:
    """The sweep's table, a line on what the CPU cannot measure, and the failed points."""
    to_console(sweep_blocks(view, title), console)


def sweep_summary(view: SweepView, file: str | None = None) -> dict[str, Any]:
    """The printed table as JSON (the view's rows), and where the sweep's file is."""
    return {"file": file, **view.to_dict(), "failures": view.failures()}
