"""CLI commands: `replay` (one path) and `compare` (both paths, side by side), with one option set.

`replay_options` gives a command the parameters both share (declared once, in `_replay_parameters`)
and runs the `ReplayConfig` and `Outputs` their values make. An `OptionError` the engine raises in
its own words (`token_count: ...`) leaves the command as the flag that set it (`--token-count: ...`).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from fdoverlap_cli.commands.options import JsonOpt, Outputs, TimelineOpt, WindowOpt, choices, parse_window
from fdoverlap_cli.engine.designs import DESIGNS, DEVELOP
from fdoverlap_cli.engine.graphs import GRAPH_MODES
from fdoverlap_cli.engine.model import PRESETS
from fdoverlap_cli.engine.output_ipc import OUTPUT_IPCS
from fdoverlap_cli.engine.runner import HOST_WORK_STAGES
from fdoverlap_cli.errors import CheckFailed, FdoError, OptionError

# FDOVERLAP_TP_LAUNCH=1 starts even --tp 1 as a rank of paddle's launcher (the GPU session checks the launcher and
# paddle's collective set-up on a host with one GPU that way).
TP_LAUNCH_ENV = "FDOVERLAP_TP_LAUNCH"

if TYPE_CHECKING:
    from fdoverlap_cli.session import ReplayConfig


def _replay_parameters(
    trace: Annotated[
        Path | None,
        typer.Argument(help="Trace file (default: the bundled traces/default.json).", show_default=False),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", metavar=choices("auto", "cpu", "gpu"), help="auto: the GPU if paddle sees one.")
    ] = "auto",
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            metavar=choices(*PRESETS, "auto"),
            help="The model (float16 ones need a GPU); auto: tiny on a CPU, 8b on a GPU.",
        ),
    ] = "auto",
    layers: Annotated[int | None, typer.Option("--layers", min=1, help="Layer count (default: the preset's).")] = None,
    dims: Annotated[
        str | None,
        typer.Option("--dims", metavar="K=V,...", help="Model dimensions, e.g. hidden_size=1024, ffn_size=4096."),
    ] = None,
    fused_layers: Annotated[
        bool,
        typer.Option(
            "--fused-layers/--op-by-op",
            help="One op per decoder layer, or one per kernel (host-bound without CUDA graphs).",
        ),
    ] = True,
    cuda_graph: Annotated[
        str,
        typer.Option(
            "--cuda-graph",
            metavar=choices(*GRAPH_MODES),
            help="auto: decode-only batches replay CUDA graphs on a GPU (the CPU has none); on: require them; "
            "off: launch every forward from the host.",
        ),
    ] = "auto",
    runner: Annotated[
        str,
        typer.Option(
            "--runner",
            metavar=choices(*DESIGNS),
            help="develop: FastDeploy's runner today (no not_need_stop, an upper-bound token count, "
            "token_num_event); pr6176: the runner of PR #6176.",
        ),
    ] = DEVELOP,
    output_ipc: Annotated[
        str,
        typer.Option(
            "--output-ipc",
            metavar=choices(*OUTPUT_IPCS),
            help="msgqueue: save_output on a SysV queue; zmq: a queue and a sender thread, PUSH to the reader's "
            "PULL (FD_USE_GET_SAVE_OUTPUT_V1).",
        ),
    ] = "msgqueue",
    token_count: Annotated[
        str,
        typer.Option(
            "--token-count",
            metavar=choices("predict", "sync"),
            help="predict: decode-only batches use the host's count (pr6176) or the cached upper bound "
            "(develop); sync: read it back every step.",
        ),
    ] = "predict",
    copy_stream: Annotated[
        str,
        typer.Option(
            "--copy-stream",
            metavar=choices("compute", "separate"),
            help="compute: DtoH copies on the compute stream; separate: on their own stream.",
        ),
    ] = "compute",
    snapshot_preempted: Annotated[
        bool,
        typer.Option("--snapshot-preempted/--no-snapshot-preempted", help="Snapshot preempted_idx at postprocess."),
    ] = True,
    verify_token_count: Annotated[
        bool,
        typer.Option("--verify-token-count", help="Read the token count back every step and check the prediction."),
    ] = False,
    host_work_us: Annotated[
        int,
        typer.Option(
            "--host-work-us",
            min=0,
            metavar="N",
            help="An emulated extra host cost: N µs of busy host work a step, inside --host-work-stage.",
        ),
    ] = 0,
    host_work_stage: Annotated[
        str,
        typer.Option(
            "--host-work-stage",
            metavar=choices(*HOST_WORK_STAGES),
            help="The stage --host-work-us is spent in (its span and its exposed host time hold it).",
        ),
    ] = "preprocess",
    timestamps: Annotated[
        bool, typer.Option("--timestamps/--no-timestamps", help="GPU timestamps at stage boundaries.")
    ] = True,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Steps replayed once before measuring.")] = 8,
    tp: Annotated[
        int,
        typer.Option(
            "--tp",
            min=1,
            help="Tensor-parallel ranks, started through paddle.distributed.launch (NCCL between GPUs, gloo on "
            "the CPU); it must divide the heads, the kv heads and the intermediate size.",
        ),
    ] = 1,
    window: WindowOpt = None,
    cuda_profiler_range: Annotated[
        bool,
        typer.Option(
            "--cuda-profiler-range",
            help="cudaProfilerStart and cudaProfilerStop around the measured paths (for nsys -c cudaProfilerApi).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write the results (run.json) here ('-': stdout).")
    ] = None,
    timeline: TimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The parameters replay and compare share (their declarations; never called)."""


_SHARED = inspect.signature(_replay_parameters).parameters
_HINTS = get_type_hints(_replay_parameters, include_extras=True)
# ReplayConfig's and RunnerOptions' field names -> the flag that sets them, for OptionError.
FLAGS = {
    "trace_file": "TRACE",
    "paths": "--path",
    "path": "--path",
    "warmup_steps": "--warmup",
    "design": "--runner",
    "snapshot_preempted": "--no-snapshot-preempted",
    **{name: f"--{name.replace('_', '-')}" for name in ("device", "preset", "layers", "dims", "window", "tp")},
    **{
        name: f"--{name.replace('_', '-')}"
        for name in ("token_count", "copy_stream", "cuda_graph", "host_work_us", "host_work_stage", "output_ipc")
    },
}


def _config(paths: tuple[str, ...], values: dict[str, Any]) -> tuple[ReplayConfig, Outputs]:
    from fdoverlap_cli.engine.runner import RunnerOptions
    from fdoverlap_cli.resources import traces_dir
    from fdoverlap_cli.session import ReplayConfig

    v = values
    config = ReplayConfig(
        trace_file=v["trace"] or traces_dir() / "default.json",
        paths=paths,
        device=v["device"],
        preset=v["preset"],
        layers=v["layers"],
        dims=v["dims"],
        fused_layers=v["fused_layers"],
        cuda_graph=v["cuda_graph"],
        runner=RunnerOptions(
            design=v["runner"],
            token_count=v["token_count"],
            copy_stream=v["copy_stream"],
            snapshot_preempted=v["snapshot_preempted"],
            verify_token_count=v["verify_token_count"],
            timestamps=v["timestamps"],
            host_work_us=v["host_work_us"],
            host_work_stage=v["host_work_stage"],
        ),
        output_ipc=v["output_ipc"],
        warmup_steps=v["warmup"],
        window=parse_window(v["window"]),
        cuda_profiler_range=v["cuda_profiler_range"],
        tp=v["tp"],
        command=("fdoverlap", *sys.argv[1:]),
    )
    return config, Outputs({"-o": v["out"], "--timeline": v["timeline"]}, v["as_json"])


def as_flag(e: OptionError) -> FdoError:
    """The engine's OptionError in the CLI's words: the flag that set the option."""
    return FdoError(f"{FLAGS.get(e.option, e.option)}: {e.reason}")


def with_replay_parameters(command: Callable[..., None], leave_out: tuple[str, ...] = ()) -> Callable[..., None]:
    """Make `command(shared, **own parameters)` a Typer command with the shared replay parameters too (but
    those in `leave_out`): `shared` holds their values by name. An OptionError leaves it as the flag's."""
    own = inspect.signature(command).parameters
    own_hints = get_type_hints(command, include_extras=True)
    shared_names = [name for name in _SHARED if name not in leave_out]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        shared = {name: kwargs.pop(name) for name in shared_names}
        try:
            command(shared, **kwargs)
        except OptionError as e:
            raise as_flag(e) from None

    parameters = [p.replace(annotation=own_hints[p.name]) for name, p in own.items() if name != "shared"]
    parameters += [_SHARED[name].replace(annotation=_HINTS[name]) for name in shared_names]
    # The trace argument first, as the help shows it: `replay [TRACE] [OPTIONS]`.
    parameters.sort(key=lambda p: p.name != "trace")
    wrapper.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def replay_options(command: Callable[..., tuple[str, ...]]) -> Callable[..., None]:
    """Make `command(own parameters) -> paths` a Typer command with the shared replay parameters too.

    The command picks the paths from its own parameters; the wrapper builds the ReplayConfig and runs it.
    """

    def run(shared: dict[str, Any], **own: Any) -> None:
        run_replay(command(**own), shared)

    run.__signature__ = inspect.signature(command)  # type: ignore[attr-defined]
    functools.update_wrapper(run, command, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    run.__annotations__ = get_type_hints(command, include_extras=True)
    return with_replay_parameters(run)


def base_config(paths: tuple[str, ...], values: dict[str, Any]) -> ReplayConfig:
    """The ReplayConfig of the shared parameters' `values`, those not given (left out) at their defaults."""
    defaults = {name: p.default for name, p in _SHARED.items()}
    return _config(paths, {**defaults, **values})[0]


def run_replay(paths: tuple[str, ...], values: dict[str, Any]) -> None:
    """Replay `paths` as the shared parameters' `values` say; save what was measured (also when
    interrupted), print the view, fail on a failed check."""
    from fdoverlap_cli import stop_signals

    with stop_signals.held():  # the threads numpy and paddle start must never take SIGINT/SIGTERM
        from fdoverlap_cli.platform import require_paddle
        from fdoverlap_cli.render import run_tables
        from fdoverlap_cli.session import ReplaySession

        require_paddle()

    config, outputs = _config(paths, values)
    outputs.check({"the trace": config.trace_file})  # fail now, not after the run
    if config.tp > 1 or os.environ.get(TP_LAUNCH_ENV) == "1":  # the env: one rank through the launcher too
        from fdoverlap_cli.tp_session import TensorParallelSession

        session: Any = TensorParallelSession(config)
    else:
        session = ReplaySession(config)
    try:
        with run_tables.progress(enabled=not outputs.as_json) as progress:
            session.run(progress)
    except BaseException:
        for flag in _save(session, outputs)[1]:
            outputs.wrote(flag, "what was measured before the run stopped")
        raise
    finally:
        if hasattr(session, "close"):  # a --tp run's folder of rank records, once they are merged
            session.close()
    result, written = _save(session, outputs)
    view = result.view(config.window)
    if outputs.as_json:
        typer.echo(json.dumps(run_tables.summary_dict(result, view), indent=2))
    else:
        from rich.console import Console

        run_tables.print_run(result, view, Console(stderr=True) if outputs.to_stdout else None)
    for flag in written:
        outputs.wrote(flag)
    failures = run_tables.failed_checks(result)
    if failures:
        raise CheckFailed("; ".join(failures))


def _save(session: Any, outputs: Outputs) -> tuple[Any, list[str]]:
    """The session's result, and the flags of the files it was written to (what was measured, also when
    interrupted; nothing when no path ran)."""
    from fdoverlap_cli import stop_signals

    written = []
    with stop_signals.held():  # a second signal (nsys passes one on as well) must not cut the saving short
        result = session.result()
        out, timeline = outputs.files["-o"], outputs.files["--timeline"]
        if out is not None and result.paths:
            result.save(out)
            written.append("-o")
        if timeline is not None and result.paths:
            from fdoverlap_cli.render import timeline as perfetto

            perfetto.write(timeline, {name: p.spans() for name, p in result.paths.items()})
            written.append("--timeline")
    return result, written


@replay_options
def replay(
    path: Annotated[
        str, typer.Option("--path", metavar=choices("sync", "overlap"), help="The path to replay.")
    ] = "overlap",
) -> tuple[str, ...]:
    """Replay a trace through one execute_model path and report its steps, tokens and timing.

    \b
    Example: fdoverlap replay traces/default.json --path overlap -o run.json
    """
    return (path,)


@replay_options
def compare(
    sync: Annotated[bool, typer.Option("--sync", help="Replay the sync path (neither flag: both paths).")] = False,
    overlap: Annotated[
        bool, typer.Option("--overlap", help="Replay the overlap path (neither flag: both paths).")
    ] = False,
) -> tuple[str, ...]:
    """Replay a trace through both paths with the same weights, check the tokens are identical, compare timing.

    Without --sync or --overlap both paths run (as with both). Exit code 1 when the paths emit different
    tokens (the first difference is named).

    \b
    Example: fdoverlap compare --sync --overlap traces/decode-b64.json --preset 8b -o run.json
    (--runner pr6176 --output-ipc zmq: another design and output path)
    """
    return tuple(p for p, on in (("sync", sync), ("overlap", overlap)) if on) or ("sync", "overlap")


def register(app: typer.Typer) -> None:
    """Add `replay` and `compare` to the root app."""
    app.command()(replay)
    app.command()(compare)
