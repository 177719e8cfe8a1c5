"""CLI command: `report` — present a saved run.json again (tables, JSON, figures)."""

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

    With --window the metrics are recomputed over those steps.

    [b]Example[/b]: fdoverlap report run.json --png run.png
    """
    from fdoverlap_cli.measure import metrics
    from fdoverlap_cli.report import run_tables
    from fdoverlap_cli.results import RunResult

    result = RunResult.load(str(run))
    steps = parse_window(window)
    if steps is not None:
        for path in result.paths.values():
            path.metrics = metrics.path_metrics(path.spans(), window=steps).to_dict()
        ms, mo = (result.paths.get(p) for p in ("sync", "overlap"))
        if ms and mo and ms.metrics and mo.metrics:
            result.comparison = metrics.compare(
                metrics.PathMetrics.from_dict(ms.metrics), metrics.PathMetrics.from_dict(mo.metrics)
            ).to_dict()
    if png is not None:
        from fdoverlap_cli.report.figures import plot_run

        drawable = {name: p for name, p in result.paths.items() if p.metrics}
        if not drawable:
            raise FdoError(f"{run}: no path with measured steps to draw")
        # run.json keeps the step table, not the per-step metrics: recompute them for the figure
        plot_run(
            {name: (metrics.path_metrics(p.spans(), window=steps), p.spans()) for name, p in drawable.items()},
            png,
            gantt_steps=parse_window(gantt),
        )
    if timeline is not None:
        from fdoverlap_cli.measure import timeline as perfetto

        perfetto.write(timeline, {name: p.spans() for name, p in result.paths.items()})
    if as_json:
        typer.echo(json.dumps(run_tables.summary_dict(result), indent=2))
    else:
        run_tables.print_run(result)
        if png is not None:
            typer.echo(f"wrote {png}")


def register(app: typer.Typer) -> None:
    """Add `report` to the root app."""
    app.command()(report)
