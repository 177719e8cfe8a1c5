"""CLI commands: `replay` (one path) and `compare` (both paths, side by side)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from fdoverlap_cli.commands.options import JsonOpt, TimelineOpt, WindowOpt, parse_window
from fdoverlap_cli.errors import CheckFailed, FdoError, InputError

TraceArg = Annotated[
    Path | None,
    typer.Argument(help="Trace file (default: the bundled traces/default.json).", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Model: tiny, 1b, 8b, or auto (tiny on a CPU, 8b on a GPU).")]
LayersOpt = Annotated[int | None, typer.Option("--layers", min=1, help="Layer count (default: the preset's).")]
DimsOpt = Annotated[
    str | None, typer.Option("--dims", help="Explicit model dimensions, e.g. 'hidden_size=1024,ffn_size=4096'.")
]
FusedOpt = Annotated[
    bool,
    typer.Option("--fused-layers/--op-by-op", help="One op per decoder layer, or one per kernel (host-bound)."),
]
TokenCountOpt = Annotated[
    str, typer.Option("--token-count", help="predict: count decode-only batches on the host; sync: read it back.")
]
CopyStreamOpt = Annotated[
    str,
    typer.Option("--copy-stream", help="compute: DtoH copies on the compute stream; separate: on their own stream."),
]
SnapshotOpt = Annotated[
    bool, typer.Option("--snapshot-preempted/--no-snapshot-preempted", help="Snapshot preempted_idx at postprocess.")
]
VerifyOpt = Annotated[
    bool, typer.Option("--verify-token-count", help="Read the token count back every step and check the prediction.")
]
TimestampsOpt = Annotated[
    bool, typer.Option("--timestamps/--no-timestamps", help="GPU timestamps at stage boundaries.")
]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Steps replayed once before measuring.")]
ProfilerOpt = Annotated[
    bool,
    typer.Option(
        "--cuda-profiler-range", help="cudaProfilerStart/Stop around the measured paths (nsys -c cudaProfilerApi)."
    ),
]
OutOpt = Annotated[Path | None, typer.Option("-o", "--out", help="Write the results (run.json) here.")]


def _run(
    paths: tuple[str, ...],
    *,
    trace: Path | None,
    device: str,
    preset: str,
    layers: int | None,
    dims: str | None,
    fused_layers: bool,
    token_count: str,
    copy_stream: str,
    snapshot_preempted: bool,
    verify_token_count: bool,
    timestamps: bool,
    warmup: int,
    window: str | None,
    cuda_profiler_range: bool,
    out: Path | None,
    timeline: Path | None,
    as_json: bool,
) -> None:
    from fdoverlap_cli import stop_signals

    with stop_signals.held():  # the threads numpy and paddle start must never take SIGINT/SIGTERM
        from fdoverlap_cli.engine.device import probe, require_paddle
        from fdoverlap_cli.engine.runner import RunnerOptions
        from fdoverlap_cli.fileio import check_writable
        from fdoverlap_cli.report import run_tables
        from fdoverlap_cli.resources import traces_dir
        from fdoverlap_cli.session import ReplaySession, RunRequest

        require_paddle()

    if preset == "auto":
        preset = "8b" if device != "cpu" and probe().has_gpu else "tiny"
    request = RunRequest(
        trace_path=trace or traces_dir() / "default.json",
        paths=paths,
        device=device,
        preset=preset,
        layers=layers,
        dims=dims,
        fused_layers=fused_layers,
        options=RunnerOptions(token_count, copy_stream, snapshot_preempted, verify_token_count, timestamps),
        warmup_steps=warmup,
        window=parse_window(window),
        cuda_profiler_range=cuda_profiler_range,
        command=["fdoverlap", *sys.argv[1:]],
    )
    for path in (out, timeline):  # fail now, not after the run
        if path is not None:
            check_writable(path)
    session = ReplaySession(request)
    steps = len(session.trace.steps)
    if request.window is not None and request.window[0] >= steps:
        raise InputError("--window", f"starts at step {request.window[0]}, past the trace's last step {steps - 1}")
    try:
        with run_tables.progress(enabled=not as_json) as progress:
            session.run(progress)
    finally:
        with stop_signals.held():  # a second signal (nsys passes one on as well) must not cut the saving short
            result = session.result()
            if out is not None and result.paths:  # what was measured, also when interrupted (marked incomplete)
                result.save(out)
            if timeline is not None and result.paths:
                from fdoverlap_cli.measure import timeline as perfetto

                perfetto.write(timeline, {name: p.spans() for name, p in result.paths.items()})
    if as_json:
        typer.echo(json.dumps(run_tables.summary_dict(result), indent=2))
    else:
        run_tables.print_run(result)
    failures = run_tables.failed_checks(result)
    if failures:
        raise CheckFailed("; ".join(failures))


def _options(command_locals: dict) -> dict:
    """The shared options of replay and compare (their own path selectors left out)."""
    return {k: v for k, v in command_locals.items() if k not in ("path", "paths", "sync", "overlap")}


def replay(
    trace: TraceArg = None,
    path: Annotated[str, typer.Option("--path", help="sync or overlap.")] = "overlap",
    device: DeviceOpt = "auto",
    preset: PresetOpt = "auto",
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    fused_layers: FusedOpt = True,
    token_count: TokenCountOpt = "predict",
    copy_stream: CopyStreamOpt = "compute",
    snapshot_preempted: SnapshotOpt = True,
    verify_token_count: VerifyOpt = False,
    timestamps: TimestampsOpt = True,
    warmup: WarmupOpt = 8,
    window: WindowOpt = None,
    cuda_profiler_range: ProfilerOpt = False,
    out: OutOpt = None,
    timeline: TimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a trace through one execute_model path and report its steps, tokens and timing.

    [b]Example[/b]: fdoverlap replay traces/default.json --path overlap -o run.json
    """
    if path not in ("sync", "overlap"):
        raise FdoError(f"--path: expected sync or overlap, got '{path}'")
    _run((path,), **_options(locals()))


def compare(
    trace: TraceArg = None,
    sync: Annotated[bool, typer.Option("--sync", help="Replay the sync path.")] = False,
    overlap: Annotated[bool, typer.Option("--overlap", help="Replay the overlap path.")] = False,
    device: DeviceOpt = "auto",
    preset: PresetOpt = "auto",
    layers: LayersOpt = None,
    dims: DimsOpt = None,
    fused_layers: FusedOpt = True,
    token_count: TokenCountOpt = "predict",
    copy_stream: CopyStreamOpt = "compute",
    snapshot_preempted: SnapshotOpt = True,
    verify_token_count: VerifyOpt = False,
    timestamps: TimestampsOpt = True,
    warmup: WarmupOpt = 8,
    window: WindowOpt = None,
    cuda_profiler_range: ProfilerOpt = False,
    out: OutOpt = None,
    timeline: TimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a trace through both paths with the same weights, check the tokens are identical, compare timing.

    Exit code 1 when the paths emit different tokens (the first difference is named).

    [b]Example[/b]: fdoverlap compare --sync --overlap traces/decode-b64.json --preset 8b -o run.json
    """
    paths = tuple(p for p, on in (("sync", sync), ("overlap", overlap)) if on) or ("sync", "overlap")
    _run(paths, **_options(locals()))


def register(app: typer.Typer) -> None:
    """Add `replay` and `compare` to the root app."""
    app.command()(replay)
    app.command()(compare)
