"""A sweep as a report to attach to a pull request: GitHub markdown (the sweep's table and every point's token
check, to paste) and one self-contained HTML page (that, the sweep's figure inline as SVG, per point its row and
its token check, the grid, the environment and the command line).

Both are drawn from the blocks the terminal prints (`sweep_tables.sweep_blocks`, of the typed `SweepView`) and
each point's recorded checks: the same rows and cells as `sweep` and `report sweep.json` show.
"""

from __future__ import annotations

import shlex

from fdoverlap_cli.render import html, markdown
from fdoverlap_cli.render.blocks import BOLD, FAIL, WARN, Block, Section, Text, text
from fdoverlap_cli.render.run_report import settings_table, token_check
from fdoverlap_cli.render.run_tables import check_lines, header_line
from fdoverlap_cli.render.sweep_tables import axis_value, sweep_blocks, sweep_table
from fdoverlap_cli.sweep.record import DONE, FAILED, SweepPoint, SweepResult, SweepView


def title(view: SweepView) -> str:
    """The report's title: what the sweep ran, on which model and device."""
    return f"sweep: {view.title}"


def subtitle(record: SweepResult) -> str:
    """How many points were measured, and when the sweep was recorded."""
    done = sum(p.status == DONE for p in record.points)
    state = "every point measured" if record.complete else f"{done} of {len(record.points)} points measured"
    return f"{len(record.points)} points, {state} · recorded {record.created}"


def _status(p: SweepPoint) -> Text:
    """A point that has no run to check: why (pending, failed with its error)."""
    why = f": {p.error}" if p.status == FAILED and p.error else ""
    return text((p.status, FAIL if p.status == FAILED else WARN), why)


def point_checks(record: SweepResult) -> list[Block]:
    """Per point, one line each of its token checks (its label first), or why it has none."""
    out: list[Block] = []
    for p in record.points:
        lines = check_lines(p.run) if p.run is not None else [_status(p)]
        if p.run is not None and p.run.identity is None:
            lines.append(text("tokens not compared"))
        if p.status != DONE and p.run is not None:
            lines.append(_status(p))
        out += [text((p.label, BOLD), ": ", *line.pieces) for line in lines]
    return out


def markdown_report(record: SweepResult, view: SweepView) -> str:
    """The sweep's table, what the CPU cannot measure, the failed points, and every point's token check."""
    return markdown.document(
        title(view), [Section("", sweep_blocks(view)), Section("Token check", point_checks(record))]
    )


def _point(record: SweepResult, view: SweepView, i: int) -> Section:
    """A point: its trace, model and device, its row of the table, its token check."""
    p, row = record.points[i], view.rows[i]
    blocks: list[Block] = [header_line(p.run)] if p.run is not None else []
    blocks.append(sweep_table(view, (row,), name="point"))
    if p.run is not None:
        blocks += token_check(p.run)
    if p.status != DONE:
        blocks.append(_status(p))
    return Section(f"Point {p.label}", blocks)


def html_report(record: SweepResult, view: SweepView, figure_svg: str = "") -> str:
    """The whole page: the sweep's table, its figure, each point, the grid, the environment, the command line."""
    sections = [Section("Sweep", sweep_blocks(view))]
    if figure_svg:
        sections.append(Section("Figure", svg=figure_svg))
    sections += [_point(record, view, i) for i in range(len(record.points))]
    axes = {a["name"]: ", ".join(axis_value(v) for v in a["values"]) for a in record.axes}
    grid: list[Block] = [settings_table(axes, "axes (the grid is every combination)")]
    first = next((p.run for p in record.points if p.run is not None), None)
    if first is not None:
        grid.append(settings_table(first.options, "the first point's options (the axes vary them)"))
    sections.append(Section("Grid", grid))
    if first is not None:
        environment = settings_table(first.environment, "environment (the first point's run)")
        sections.append(Section("Environment and device", [environment, settings_table(first.model, "model")]))
    sections.append(
        Section("Command line", [text(shlex.join(record.command)), text(f"sweep recorded {record.created}")])
    )
    return html.document(title(view), subtitle(record), sections)
