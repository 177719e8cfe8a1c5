"""CLI commands: ops build, doctor."""

from __future__ import annotations

import json
from typing import Annotated

import typer

ops_app = typer.Typer(
    name="ops",
    help="The op library (custom_ops/): build it or show the cached build.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(ops_app)
    app.command("doctor")(doctor_command)


@ops_app.command("build")
def build_command(
    force: Annotated[bool, typer.Option("--force", help="Compile even when a cached build exists.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the compiler's output as it runs.")] = False,
    as_json: Json = False,
) -> None:
    """Build the op library for this machine (CPU, or CUDA for its GPU), or report the cached build.

    Cached in $FDOVERLAP_CACHE_DIR (default ~/.cache/fdoverlap), keyed by sources, flags, paddle build, GPU arch.

    \b
    Example: fdoverlap ops build --verbose
    """
    from fdoverlap_cli import stop_signals

    with stop_signals.held():  # the threads numpy starts must never take SIGINT/SIGTERM (paddle's handler would)
        import numpy  # noqa: F401

        from fdoverlap_cli import ops

    info = ops.build(force=force, verbose=verbose)
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
    else:
        from fdoverlap_cli.render.doctor import render_build

        render_build(info)


def doctor_command(as_json: Json = False) -> None:
    """Check that fdoverlap can run here: paddle, the GPU, nvcc, nsys, the op library, NVTX.

    Exits 0 when paddle imports and the op library builds and loads, 1 otherwise.

    \b
    Example: fdoverlap doctor --json
    """
    from fdoverlap_cli import stop_signals
    from fdoverlap_cli.errors import CheckFailed

    with stop_signals.held():  # as in `ops build`
        import numpy  # noqa: F401

        from fdoverlap_cli.doctor import diagnose

    diagnosis = diagnose()
    if as_json:
        typer.echo(json.dumps(diagnosis.to_dict(), indent=2))
    else:
        from fdoverlap_cli.render.doctor import render_doctor

        render_doctor(diagnosis)
    if not diagnosis.can_run:
        failed = ", ".join(check.name for check in diagnosis.checks if check.ok is False)
        raise CheckFailed(f"fdoverlap cannot run here: {failed} failed")
