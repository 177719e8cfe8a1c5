"""CLI command: `sweep` — compare both paths at every point of a grid: batch sizes (or traces) × options.

The base of every point is the replay's own option set (`commands/run.py`); `--axis NAME=V1,V2` varies any
of its scalar fields (sweep/grid.py), `--batch` synthesizes a trace per size, `--trace` takes trace files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fdoverlap_cli.commands.options import JsonOpt, Outputs
from fdoverlap_cli.commands.run import FLAGS, base_config, with_replay_parameters
from fdoverlap_cli.errors import CheckFailed, FdoError

LEFT_OUT = ("trace", "out", "timeline", "as_json", "window", "cuda_profiler_range", "tp")


def sweep(
    shared: dict[str, Any],
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch", metavar="N,N,...", help="Batch sizes (slots): a trace synthesized per size, e.g. 16,64,128."
        ),
    ] = None,
    traces: Annotated[
        list[Path] | None,
        typer.Option(
            "--trace",
            metavar="FILE",
            help="A trace file as a point of the first axis, instead of --batch (repeatable).",
        ),
    ] = None,
    axes: Annotated[
        list[str] | None,
        typer.Option(
            "--axis",
            metavar="NAME=V1,V2",
            help="An option to vary, named as its flag or field: copy_stream=compute,separate, cuda_graph=on,off, "
            "host_work_us=0,500,2000 (repeatable: the grid is every combination).",
        ),
    ] = None,
    waves: Annotated[int, typer.Option("--waves", min=1, help="--batch: requests = waves × batch size.")] = 2,
    prompt_len: Annotated[
        str, typer.Option("--prompt-len", help="--batch: prompt lengths, as trace synth takes them.")
    ] = "128..512",
    output_len: Annotated[str, typer.Option("--output-len", help="--batch: output lengths, likewise.")] = "32..48",
    seed: Annotated[int, typer.Option("--seed", min=0, help="--batch: seeds the synthesized traces.")] = 0,
    max_num_batched_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-num-batched-tokens", min=1, help="--batch: tokens per step at most (default: max(2048, 32 × size))."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("-o", "--out", help="The results file: rewritten after every point; run again to resume it."),
    ] = Path("sweep.json"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Measure every point anew, whatever --out holds.")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="Write the figure as PNG ('-': stdout).")] = None,
    svg: Annotated[Path | None, typer.Option("--svg", help="Write the figure as SVG ('-': stdout).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the sync and overlap paths at every point of a grid: batch sizes × options.

    Each point is a whole compare (its run.json inside the results file); the tokens are checked at every
    point, and the exit code is 1 when a point's check failed or it could not run. Interrupted, the file
    keeps the points measured (the one stopped marked incomplete); the same command resumes it.

    \b
    Example: fdoverlap sweep --batch 16,32,64,128 --axis copy_stream=compute,separate -o sweep.json --png sweep.png
    """
    from fdoverlap_cli import stop_signals
    from fdoverlap_cli.sweep import grid

    if (batch is None) == (not traces):
        raise FdoError("sweep: give batch sizes (--batch 16,64,...) or trace files (--trace FILE ...), one of them")
    if str(out) == "-":
        raise FdoError("-o: a sweep's results file must be a file (it is rewritten after every point)")
    outputs = Outputs({"-o": out, "--png": png, "--svg": svg}, as_json)
    outputs.check({f"--trace {t}": t for t in traces or ()})
    aliases = {flag: field for field, flag in FLAGS.items() if flag.startswith("--")}
    varied = [grid.parse_axis(a, aliases) for a in axes or ()]
    with stop_signals.held():  # the threads numpy and paddle start must never take SIGINT/SIGTERM
        from fdoverlap_cli.platform import require_paddle

        require_paddle()
    base = base_config(("sync", "overlap"), shared)
    folder = out.parent / f"{out.stem}.traces"
    if batch is not None:
        first = grid.parse_batches(batch)
        synth = grid.SynthOptions(waves, prompt_len, output_len, seed, max_num_batched_tokens)
        files = [folder / f"batch-{b}.json" for b in first.values]
        synth.spec(first.values[0])  # the lengths checked before anything is written
    else:
        files = list(traces or ())
        first = grid.Axis(grid.TRACE, tuple(str(t) for t in files))
    plan_points = grid.points(base, first, files, varied)
    if batch is not None:
        grid.synthesize(first, synth, folder)
    _run(plan_points, first, varied, outputs, fresh)


def _run(points: list[Any], first: Any, varied: list[Any], outputs: Outputs, fresh: bool) -> None:
    from fdoverlap_cli.render import run_tables
    from fdoverlap_cli.render.sweep_tables import print_sweep, sweep_summary
    from fdoverlap_cli.sweep.run import SweepPlan, prepare, run_sweep

    out = Path(outputs.files["-o"])  # type: ignore[arg-type]
    plan = SweepPlan([first, *varied], points, ("fdoverlap", *sys.argv[1:]))
    record, kept = prepare(plan, out, fresh)
    if kept and not outputs.as_json:
        typer.echo(f"resuming {out}: {kept} of {len(points)} points measured already", err=True)
    try:
        with run_tables.progress(enabled=not outputs.as_json) as progress:
            run_sweep(record, plan, out, progress)
    except BaseException:
        outputs.wrote("-o", "the points measured before the sweep stopped")
        raise
    view = record.view()
    write_figures(view, outputs)
    if outputs.as_json:
        typer.echo(json.dumps(sweep_summary(view, str(out)), indent=2))
    else:
        from rich.console import Console

        print_sweep(view, Console(stderr=True) if outputs.to_stdout else None, view.title)
    for flag in ("-o", "--png", "--svg"):
        if outputs.files.get(flag) is not None:
            outputs.wrote(flag)
    failures = view.failures()
    if failures:
        raise CheckFailed(f"{len(failures)} point(s) failed: " + "; ".join(failures))


def write_figures(view: Any, outputs: Outputs) -> Any:
    """The sweep's figure, drawn once: to --png and --svg where asked for; returned (None when no output of
    this command takes it) for an HTML report to inline."""
    if not any(outputs.files.get(flag) is not None for flag in ("--png", "--svg", "--html")):
        return None
    from fdoverlap_cli.render import figures
    from fdoverlap_cli.render.sweep_figures import draw_sweep

    figure = draw_sweep(view)
    for flag, fmt in (("--png", "png"), ("--svg", "svg")):
        if outputs.files.get(flag) is not None:
            figures.write_figure(figure, outputs.files[flag], fmt)  # type: ignore[arg-type]
    return figure


def register(app: typer.Typer) -> None:
    """Add `sweep` to the root app."""
    app.command(name="sweep")(with_replay_parameters(sweep, LEFT_OUT))
