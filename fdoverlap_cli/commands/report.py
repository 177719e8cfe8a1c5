"""CLI command: `report` — present a saved run.json again (tables, JSON, figures), as compare showed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fdoverlap_cli.commands.options import (
    HtmlOpt,
    JsonOpt,
    MarkdownOpt,
    Outputs,
    SvgOpt,
    TimelineOpt,
    WindowOpt,
    parse_window,
)
from fdoverlap_cli.errors import CheckFailed, FdoError, InputError

if TYPE_CHECKING:
    from fdoverlap_cli.measure.derive import Derived
    from fdoverlap_cli.results import RunResult


def report(
    run: Annotated[
        Path, typer.Argument(help="A results file written by replay or compare (-o run.json), or by sweep.")
    ],
    png: Annotated[
        Path | None,
        typer.Option(
            "--png", help="Write a figure: hidden fraction and bubble per step, a Gantt of a few steps ('-': stdout)."
        ),
    ] = None,
    svg: SvgOpt = None,
    html: HtmlOpt = None,
    markdown: MarkdownOpt = None,
    gantt: Annotated[
        str | None, typer.Option("--gantt", help="Steps of the Gantt chart, FIRST:LAST (default: 4 from the middle).")
    ] = None,
    window: WindowOpt = None,
    timeline: TimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a saved run again: the side-by-side table, and optionally a figure, a report or a Perfetto timeline.

    The numbers cover the run's own --window unless another is given. --html writes one self-contained page
    (the table, the figure, per-step tables, trace, environment, command) and --markdown the table and the
    token check in GitHub markdown, to paste into a pull request. A sweep's results file gets its table, its
    figure, and the same two reports (the sweep's table, each point's token check). Exit code 1 when the
    run's token checks failed (a sweep: any point's), as for compare.

    \b
    Example: fdoverlap report run.json --html run.html --markdown - --svg run.svg
    Example: fdoverlap report sweep.json --html sweep.html --markdown sweep.md
    """
    from fdoverlap_cli.render import run_tables
    from fdoverlap_cli.results import RunResult
    from fdoverlap_cli.trace.format import read_json_file

    flags = ("--png", "--svg", "--html", "--markdown", "--timeline")
    outputs = Outputs(dict(zip(flags, (png, svg, html, markdown, timeline), strict=True)), as_json)
    outputs.check({"the run": run})
    gantt_steps = parse_window(gantt, "--gantt")
    if gantt_steps is not None and png is None and svg is None and html is None:
        raise FdoError("--gantt: it picks the steps of the figure's Gantt charts: give --png, --svg or --html too")
    doc = read_json_file(run, "results file")
    if _is_sweep(doc):
        return _report_sweep(doc, run, outputs, gantt=gantt, window=window)
    result = RunResult.from_dict(doc, str(run))
    asked = parse_window(window)
    try:
        view = result.view(asked or result.window)
    except InputError as e:  # a window holding no step: the option's, or the one the file records
        raise InputError(f"--window {window}" if asked else f"{run}: window", e.reason) from None
    if gantt_steps is not None:
        _check_gantt(gantt_steps, view)
    _write_reports(result, view, outputs, gantt_steps, run)
    if timeline is not None:
        from fdoverlap_cli.render import timeline as perfetto

        perfetto.write(timeline, {name: p.spans() for name, p in result.paths.items()})
    if as_json:
        typer.echo(json.dumps(run_tables.summary_dict(result, view), indent=2))
    else:
        from rich.console import Console

        run_tables.print_run(result, view, Console(stderr=True) if outputs.to_stdout else None)
    for flag in flags:
        if outputs.files[flag] is not None:
            outputs.wrote(flag)
    failures = run_tables.failed_checks(result)
    if failures:
        raise CheckFailed("; ".join(failures))


def _write_reports(
    result: RunResult, view: Derived, outputs: Outputs, gantt_steps: tuple[int, int] | None, run: Path
) -> None:
    """The figure (--png, --svg, and inline in --html) and the reports (--html, --markdown), all of one view."""
    from fdoverlap_cli.fileio import write_text
    from fdoverlap_cli.render import run_report

    files = outputs.files
    figure = None
    if any(files[flag] is not None for flag in ("--png", "--svg", "--html")):
        from fdoverlap_cli.render import figures

        drawable = run_report.drawable(result, view)
        if drawable:
            figure = figures.draw_run(drawable, gantt_steps, run_report.figure_title(result, view))
        elif files["--png"] is not None or files["--svg"] is not None:
            raise FdoError(f"{run}: no path with measured steps to draw")
        for flag, fmt in (("--png", "png"), ("--svg", "svg")):
            if files[flag] is not None:
                figures.write_figure(figure, files[flag], fmt)
    if files["--html"] is not None:
        from fdoverlap_cli.render.figures import svg_of

        write_text(files["--html"], run_report.html_report(result, view, svg_of(figure) if figure else ""))
    if files["--markdown"] is not None:
        write_text(files["--markdown"], run_report.markdown_report(result, view))


def _is_sweep(doc: object) -> bool:
    from fdoverlap_cli.sweep.record import SWEEP_FORMAT

    return isinstance(doc, dict) and doc.get("format") == SWEEP_FORMAT


def _report_sweep(doc: object, file: Path, outputs: Outputs, **run_only: str | None) -> None:
    """A sweep's results file: its table (or JSON), its figure (--png, --svg), its reports (--html, --markdown);
    exit 1 on a failed point."""
    from fdoverlap_cli.commands.sweep import write_figures
    from fdoverlap_cli.fileio import write_text
    from fdoverlap_cli.render import sweep_report
    from fdoverlap_cli.render.sweep_tables import print_sweep, sweep_summary
    from fdoverlap_cli.sweep.record import SweepResult

    files = outputs.files
    for option, given in (*run_only.items(), ("timeline", files["--timeline"])):
        if given is not None:
            raise FdoError(f"--{option}: a run's option; {file} is a sweep (report one of its points' runs instead)")
    record = SweepResult.from_dict(doc, str(file))
    view = record.view()
    figure = write_figures(view, outputs)
    if files["--html"] is not None:
        from fdoverlap_cli.render.figures import svg_of

        write_text(files["--html"], sweep_report.html_report(record, view, svg_of(figure)))
    if files["--markdown"] is not None:
        write_text(files["--markdown"], sweep_report.markdown_report(record, view))
    if outputs.as_json:
        typer.echo(json.dumps(sweep_summary(view, str(file)), indent=2))
    else:
        from rich.console import Console

        print_sweep(view, Console(stderr=True) if outputs.to_stdout else None, view.title)
    for flag in ("--png", "--svg", "--html", "--markdown"):
        if files[flag] is not None:
            outputs.wrote(flag)
    failures = view.failures()
    if failures:
        raise CheckFailed(f"{len(failures)} point(s) failed: " + "; ".join(failures))


def _check_gantt(steps: tuple[int, int], view: Derived) -> None:
    """The Gantt must hold a step the numbers cover, as a --window must hold a step of the run."""
    first, last = view.steps or (None, None)
    if first is None or steps[1] < first or steps[0] > last:
        covered = "no step" if first is None else f"steps {first}–{last}"
        raise FdoError(f"--gantt: steps {steps[0]}–{steps[1]} hold none of the measured steps ({covered})")


def register(app: typer.Typer) -> None:
    """Add `report` to the root app."""
    app.command()(report)
