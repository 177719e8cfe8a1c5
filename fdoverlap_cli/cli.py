"""The `fdoverlap` command: a thin Typer app. Each command turns options into one call into the modules."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from fdoverlap_cli import __version__
from fdoverlap_cli.commands import nsys, ops, report, run, trace
from fdoverlap_cli.errors import ExitCode, FdoError, Interrupted

app = typer.Typer(
    name="fdoverlap",
    help="Replay recorded batches through FastDeploy's synchronous and overlapped execute_model, "
    "check that both emit the same tokens, and measure what the overlap hides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fdoverlap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Replay and profile the overlapped execute_model of FastDeploy's GPU model runner.

    [b]Example[/b]: fdoverlap compare --sync --overlap
    """


trace.register(app)
ops.register(app)
run.register(app)
report.register(app)
nsys.register(app)


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _is_usage_error(e: Exception) -> bool:
    # Click's ClickException (Typer may vendor its own copy of Click, so match by shape).
    return callable(getattr(e, "show", None)) and hasattr(e, "exit_code")


def _usage_line(e: Exception) -> str:
    """A Click usage error as one line: the problem, and where to read the command's help."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{e.format_message()}{hint}"  # type: ignore[attr-defined]


def _one_line(text: str) -> str:
    """Messages from paddle and the OS may span lines; the CLI prints exactly one."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line on stderr and the documented exit codes."""
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        # Without standalone mode Click returns the code of a typer.Exit raised inside a command.
        returned = app(args=argv, prog_name="fdoverlap", standalone_mode=False)
        code = returned if isinstance(returned, int) else ExitCode.OK
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        code = ExitCode.SIGINT
    except FdoError as e:
        print(f"fdoverlap: error: {_one_line(e)}", file=sys.stderr)
        code = e.exit_code
    except MemoryError as e:
        print(f"fdoverlap: error: out of memory: {_one_line(e) or 'an allocation failed'}", file=sys.stderr)
        code = ExitCode.BAD_INPUT
    except Interrupted as e:
        print(f"fdoverlap: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("fdoverlap: interrupted", file=sys.stderr)
        code = ExitCode.SIGINT
    except Exception as e:
        if _is_usage_error(e):
            if type(e).__name__ == "NoArgsIsHelpError":  # a group called with nothing: its help
                e.show()  # type: ignore[attr-defined]
            else:
                print(f"fdoverlap: error: {_one_line(_usage_line(e))}", file=sys.stderr)
            return int(getattr(e, "exit_code", ExitCode.BAD_INPUT))
        if os.environ.get("FDOVERLAP_DEBUG"):
            raise
        print(
            f"fdoverlap: internal error: {type(e).__name__}: {_one_line(e)} (set FDOVERLAP_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        code = ExitCode.INTERNAL
    sys.stdout.flush()
    return int(code)


def entry_point() -> None:
    """Console-script entry: exit with main()'s code."""
    sys.exit(main())
