"""CLI commands: `analyze` (read an Nsight Systems export) and `profile` (run a command under nsys, then analyze)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fdoverlap_cli.commands.options import (
    HtmlOpt,
    JsonOpt,
    MarkdownOpt,
    Outputs,
    TimelineOpt,
    WindowOpt,
    choices,
    parse_window,
)
from fdoverlap_cli.errors import FdoError

if TYPE_CHECKING:
    from fdoverlap_cli.nsys.analysis import NsysAnalysis, NsysVersus
    from fdoverlap_cli.nsys.crosscheck import CrossCheck
    from fdoverlap_cli.nsys.markers import StepSpec

NsysOpt = Annotated[str | None, typer.Option("--nsys", help="The nsys executable (default: $NSYS, then nsys on PATH).")]
StepsOpt = Annotated[
    str | None,
    typer.Option(
        "--steps",
        metavar="SPEC",
        help="Find the steps from this marker, not the tool's NVTX: copy:dtoh<=64KiB, copy:dtoh,pinned, sync, "
        "sync:event, kernel:REGEX, nvtx:NAME@DOMAIN (docs/nsys.md). Default on an export without the tool's "
        "ranges: the marker that fits best.",
    ),
]


def _present(
    analysis: NsysAnalysis,
    against: CrossCheck | None,
    outputs: Outputs,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the timeline and the reports if asked, then print the analysis (Rich) or its JSON."""
    from fdoverlap_cli.render import nsys_tables

    timeline = outputs.files["--timeline"]
    if timeline is not None:
        if not analysis.attribution.paths:
            raise FdoError(f"--timeline: no fdoverlap paths to draw ({analysis.unavailable})")
        from fdoverlap_cli.render import timeline as perfetto

        tracks, flows = analysis.timeline()
        perfetto.write(timeline, tracks, flows, metadata={"source": analysis.file})
    _write_reports(analysis, against, outputs)
    if outputs.as_json:
        nsys_tables.print_warnings(analysis)
        from fdoverlap_cli.render import json_stream

        doc = {**(extra or {}), **analysis.to_dict(arrays=True), "against": against.to_dict() if against else None}
        json_stream.write(doc)
    else:
        from rich.console import Console

        nsys_tables.print_analysis(analysis, against, Console(stderr=True) if outputs.to_stdout else None)
    for flag in ("--timeline", "--html", "--markdown"):
        if outputs.files.get(flag) is not None:
            outputs.wrote(flag)


def _write_reports(analysis: NsysAnalysis, against: CrossCheck | None, outputs: Outputs) -> None:
    """--html (with the figure of the attributed paths) and --markdown, from the blocks the table prints."""
    from fdoverlap_cli.fileio import write_text
    from fdoverlap_cli.render import nsys_report

    page, text = outputs.files.get("--html"), outputs.files.get("--markdown")
    if page is not None:
        svg = ""
        drawable = nsys_report.drawable(analysis)
        if drawable:
            from fdoverlap_cli.render import figures

            svg = figures.svg_of(figures.draw_run(drawable, title=nsys_report.figure_title(analysis)))
        write_text(page, nsys_report.html_report(analysis, against, svg))
    if text is not None:
        write_text(text, nsys_report.markdown_report(analysis, against))


def _analyze(
    export: Path,
    window: tuple[int, int] | None,
    against: Path | None,
    keep_flows: bool,
    nsys: str | None = None,
    steps: StepSpec | None = None,
) -> tuple[NsysAnalysis, CrossCheck | None]:
    """Read the export (an .nsys-rep is exported first), then cross-check it against `against` if given."""
    from fdoverlap_cli.nsys.analysis import analyze as analyze_export
    from fdoverlap_cli.nsys.crosscheck import cross_check
    from fdoverlap_cli.results import RunResult

    run = RunResult.load(against) if against is not None else None  # a bad run.json fails before the export is read
    with _sqlite_of(export, nsys) as sqlite:
        analysis = analyze_export(sqlite, window=window, keep_flows=keep_flows, steps=steps)
    check = None
    if run is not None:
        if analysis.unavailable is None:
            check = cross_check(analysis, run, str(against))
        else:
            analysis.notes.append(f"--against {against}: nothing to compare, the export has no per-step metrics")
    return analysis, check


def analyze(
    export: Annotated[
        Path,
        typer.Argument(
            help="An `nsys export --type sqlite` file, or an .nsys-rep report (needs nsys).", metavar="REPORT"
        ),
    ],
    against: Annotated[
        Path | None,
        typer.Option("--against", help="The tool's own results of the same run (run.json), side by side with nsys."),
    ] = None,
    window: WindowOpt = None,
    timeline: TimelineOpt = None,
    html: HtmlOpt = None,
    markdown: MarkdownOpt = None,
    as_json: JsonOpt = False,
    nsys: NsysOpt = None,
    steps: StepsOpt = None,
    vs: Annotated[
        Path | None,
        typer.Option(
            "--vs",
            metavar="REPORT",
            help="A second report (e.g. the engine with overlap off, then on): the per-step table of the steps "
            "found without NVTX for both, with the change.",
        ),
    ] = None,
    vs_steps: Annotated[
        str | None,
        typer.Option("--vs-steps", metavar="SPEC", help="The step marker of the --vs report (default: --steps)."),
    ] = None,
) -> None:
    """Read an Nsight Systems report: NVTX ranges, copies, kernels, GPU busy, and per-step metrics.

    On an export of an fdoverlap run the sync and overlap paths get the same metrics the tool computes
    from its own timing (hidden fraction, bubble, GPU busy, step time, limit), and --against puts the
    tool's own numbers beside them. On any other export (or with --steps) the decode steps are found
    from the CUDA activity: a small device-to-host copy, a synchronisation, a kernel or a named NVTX range
    per step (docs/nsys.md), and measured step by step.

    --html writes all of it as one self-contained page with the paths' figure; --markdown the per-step
    table and the cross-check in GitHub markdown, to paste into a pull request.

    \b
    Example: fdoverlap analyze report.sqlite --against run.json --html nsys.html
    Example: fdoverlap analyze sync.sqlite --vs async.sqlite --steps sync
    """
    from fdoverlap_cli.nsys.markers import parse_steps

    spec = parse_steps(steps) if steps is not None else None  # a bad spec is refused before any work
    if vs is None:
        if vs_steps is not None:
            raise FdoError("--vs-steps: only with --vs (the marker of the second report)")
        outputs = Outputs({"--timeline": timeline, "--html": html, "--markdown": markdown}, as_json)
        outputs.check({"the report": export, "--against": against})
        analysis, check = _analyze(export, parse_window(window), against, timeline is not None, nsys, spec)
        _present(analysis, check, outputs)
        return
    if against is not None:
        raise FdoError(
            "--vs: not with --against (--against checks one export against the tool's run.json of the same run; "
            "--vs puts two exports' steps side by side): use one or the other"
        )
    if timeline is not None:
        raise FdoError("--timeline: not with --vs (draw each export on its own)")
    b_spec = parse_steps(vs_steps) if vs_steps is not None else None
    outputs = Outputs({"--html": html, "--markdown": markdown}, as_json)
    outputs.check({"the report": export, "--vs": vs})
    _present_versus(_versus(export, vs, parse_window(window), nsys, spec, b_spec), outputs)


def _versus(
    a: Path, b: Path, window: tuple[int, int] | None, nsys: str | None, spec: StepSpec | None, b_spec: StepSpec | None
) -> NsysVersus:
    """Both reports (.nsys-rep exported first), each with its steps found without NVTX."""
    from fdoverlap_cli.nsys.analysis import analyze_versus

    with _sqlite_of(a, nsys) as first, _sqlite_of(b, nsys) as second:
        return analyze_versus(first, second, steps=spec, vs_steps=b_spec, window=window)


def _present_versus(v: NsysVersus, outputs: Outputs) -> None:
    """--html and --markdown of the side-by-side table if asked, then the table (Rich) or the JSON."""
    from fdoverlap_cli.fileio import write_text
    from fdoverlap_cli.render import html, markdown, marker_tables, nsys_tables
    from fdoverlap_cli.render.blocks import Section

    blocks = marker_tables.versus_blocks(v)
    title = f"{Path(v.a.file).name} against {Path(v.b.file).name}"
    if outputs.files.get("--html") is not None:
        write_text(
            outputs.files["--html"], html.document(title, "steps found without NVTX", [Section("Per step", blocks)])
        )
    if outputs.files.get("--markdown") is not None:
        write_text(outputs.files["--markdown"], markdown.document(title, [Section("", blocks)]))
    if outputs.as_json:
        nsys_tables.print_warnings(v.a)
        nsys_tables.print_warnings(v.b)
        from fdoverlap_cli.render import json_stream

        json_stream.write(v.to_dict(arrays=True))
    else:
        from rich.console import Console

        marker_tables.print_versus(v, Console(stderr=True) if outputs.to_stdout else None)
    for flag in ("--html", "--markdown"):
        if outputs.files.get(flag) is not None:
            outputs.wrote(flag)


def profile(
    command: Annotated[
        list[str], typer.Argument(help="The fdoverlap command to profile, after --.", show_default=False)
    ],
    nsys: NsysOpt = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Report name: writes NAME.nsys-rep and NAME.sqlite.")] = Path(
        "fdoverlap-profile"
    ),
    capture: Annotated[
        str,
        typer.Option(
            "--capture",
            metavar=choices("measure", "cuda-profiler", "all"),
            help="measure: the measured paths only; cuda-profiler: cudaProfilerStart/Stop; all: the whole run.",
        ),
    ] = "measure",
    cuda_graph_trace: Annotated[
        str,
        typer.Option(
            "--cuda-graph-trace",
            metavar=choices("graph", "node"),
            help="graph: one record per CUDA graph launch; node: the kernels inside them.",
        ),
    ] = "graph",
    window: WindowOpt = None,
    timeline: TimelineOpt = None,
    html: HtmlOpt = None,
    markdown: MarkdownOpt = None,
    as_json: JsonOpt = False,
    scrub: Annotated[
        bool,
        typer.Option(
            "--scrub", help="Strip the environment and working directory from NAME.sqlite (NAME.nsys-rep keeps them)."
        ),
    ] = False,
) -> None:
    """Run an fdoverlap command under Nsight Systems, export the report to SQLite, and analyze it.

    Runs `nsys profile -t cuda,nvtx -s none --cpuctxsw=none --cuda-graph-trace=graph|node -o NAME` with the
    capture range, then `nsys export --type sqlite`; when the command writes -o run.json, the analysis
    compares against it. --html and --markdown write the analysis's reports, as analyze does. The exit code is
    the profiled command's when it failed (nothing is analyzed when it refused its input).

    \b
    Example: fdoverlap profile -o compare -- compare --sync --overlap --preset 8b -o run.json
    """
    from fdoverlap_cli.errors import ExitCode
    from fdoverlap_cli.nsys import profile as nsys_profile

    steps = parse_window(window)
    report, sqlite = nsys_profile.output_files(out)
    outputs = Outputs(
        {
            "-o": report,
            "-o (its SQLite export)": sqlite,
            "--timeline": timeline,
            "--html": html,
            "--markdown": markdown,
            "the command's -o": nsys_profile.results_file(command),
        },
        as_json,
    )
    outputs.check()  # before the command runs: it may run for minutes
    run = nsys_profile.profile(
        command,
        name=out,
        capture=capture,
        nsys=nsys,
        quiet_stdout=as_json,
        scrub=scrub,
        cuda_graph_trace=cuda_graph_trace,
    )
    if run.exit_code == ExitCode.BAD_INPUT:
        raise FdoError("the profiled command refused its input (exit status 2, its message above): nothing to analyze")
    outputs.wrote("-o", "the Nsight Systems report")
    outputs.wrote("-o (its SQLite export)", "scrubbed" if scrub else "")
    analysis, check = _analyze(run.sqlite, steps, run.results, timeline is not None)
    extra = {
        "profile": {
            "report": str(run.report),
            "sqlite": str(run.sqlite),
            "results": str(run.results) if run.results else None,
            "command": run.argv,
            "exit_code": run.exit_code,
        }
    }
    _present(analysis, check, outputs, extra=extra)
    if run.exit_code != 0:
        raise FdoError(f"the profiled command exited with status {run.exit_code}", exit_code=run.exit_code)


def _sqlite_of(export: Path, nsys: str | None) -> contextlib.AbstractContextManager[Path]:
    """The SQLite export to read for `export`; one line says so when an .nsys-rep was exported beside itself."""
    from fdoverlap_cli.nsys.profile import sqlite_export

    def wrote(sqlite: Path) -> None:
        typer.echo(f"wrote {sqlite} (the SQLite export of {export})", err=True)

    return sqlite_export(export, nsys, wrote)


def register(app: typer.Typer) -> None:
    """Add `analyze` and `profile` to the root app."""
    app.command()(analyze)
    app.command(context_settings={"allow_interspersed_args": False})(profile)
