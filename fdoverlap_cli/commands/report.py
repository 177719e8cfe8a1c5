"""CLI command: `report` — present a saved run.json again (tables, JSON, figures), as compare showed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fdoverlap_cli.commands.options import JsonOpt, TimelineOpt, WindowOpt, parse_window
from fdoverlap_cli.errors import FdoError


def report(
    run: Annotated[Path, typer.Argument(help="A results file written by replay or compare (-o run.json).")],
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Write a figure: hidden fraction and bubble per step, a Gantt of a few steps."),
    ] = None,
    gantt: Annotated[str | None, typer.Option("--gantt", help="Steps of the Gantt chart, FIRST:LAST.")] = None,
    window: WindowOpt = None,
    timeline: TimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a saved run again: the side-by-side table, and optionally a figure or a Perfetto timeline.

    The numbers cover the run's own --window unless another is given.

    [b]Example[/b]: fdoverlap report run.json --png run.png
    """
    from fdoverlap_cli.render import run_tables
    from fdoverlap_cli.results import RunResult

    result = RunResult.load(run)
    view = result.view(parse_window(window) or result.window)
    if png is not None:
        from fdoverlap_cli.render.figures import plot_run

        drawable = {name: (m, result.paths[name].spans()) for name, m in view.paths.items() if m.steps}
        if not drawable:
            raise FdoError(f"{run}: no path with measured steps to draw")
        plot_run(drawable, png, gantt_steps=parse_window(gantt))
    if timeline is not None:
        from fdoverlap_cli.render import timeline as perfetto

        perfetto.write(timeline, {name: p.spans() for name, p in result.paths.items()})
    if as_json:
        typer.echo(json.dumps(run_tables.summary_dict(result, view), indent=2))
    else:
        run_tables.print_run(result, view)
        if png is not None:
            typer.echo(f"wrote {png}")


def register(app: typer.Typer) -> None:
    """Add `report` to the root app."""
    app.command()(report)
