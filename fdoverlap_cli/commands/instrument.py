"""CLI command: `instrument` (run a Python program with NVTX stage ranges put into it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def instrument(
    command: Annotated[
        list[str] | None, typer.Argument(help="The program to run, after --.", show_default=False)
    ] = None,
    preset: Annotated[
        list[str] | None,
        typer.Option("--preset", help="Built-in ranges: fastdeploy, transformers or fdoverlap (repeatable)."),
    ] = None,
    spec: Annotated[
        list[Path] | None,
        typer.Option("--spec", help="Ranges from a spec file: JSON, or TOML when it ends in .toml (repeatable)."),
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved ranges as JSON and run nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Say on stderr which functions get ranges.")] = False,
) -> None:
    """Run a Python program with NVTX ranges around its stage methods, without editing it.

    An import hook in the program (and in the Python processes it starts) wraps each named function
    in a push/pop range when its module is imported; the program's exit status is passed through.
    Under Nsight Systems: `nsys profile -t cuda,nvtx ... fdoverlap instrument ...`, or
    `fdoverlap profile --capture all -- instrument ...`. Spec format and presets: docs/nsys.md.

    \b
    Example: fdoverlap instrument --preset transformers -- python serve.py
    """
    from fdoverlap_cli.instrument import launch

    resolved = launch.resolve(preset or (), spec or ())
    if show:
        typer.echo(json.dumps({"env": resolved.env, "range": [r.to_dict() for r in resolved.rules]}, indent=2))
        return
    launch.run(command or [], resolved, verbose=verbose)


def register(app: typer.Typer) -> None:
    """Add `instrument` to the root app."""
    app.command(context_settings={"allow_interspersed_args": False})(instrument)
