"""The `fdoverlap` command: a thin Typer app. Each command turns options into one call into the modules."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Annotated, Any

from fdoverlap_cli.stop_signals import STOP_SIGNALS


def _exit_at_once(signum: int, _frame: object) -> None:
    print(f"fdoverlap: interrupted by signal {signum}", file=sys.stderr, flush=True)
    os._exit(128 + signum)  # not SystemExit: raised inside an atexit callback it becomes a traceback


def _exit_at_once_outside_main() -> None:
    """Before main() takes over and after it is done, SIGINT/SIGTERM/SIGHUP exit at once with 130/143/129
    and one line: importing Typer and the commands takes a while, and nothing needs cleaning up yet; at
    shutdown everything is cleaned up and written already. Each signal at its default action gets this;
    one ignored (SIGINT in a shell's background job, SIGHUP under nohup) or handled by someone else stays so.

    The last exit callback holds those signals back: past it the interpreter puts the default actions
    back while it tears down (paddle included), and a signal then would end the process
    silently with -2/-15. Held, it is dropped at exit and the exit code is the command's own."""
    if threading.current_thread() is not threading.main_thread():
        return
    default = {s: signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL for s in STOP_SIGNALS}
    ours = [s for s in STOP_SIGNALS if signal.getsignal(s) == default[s]]
    for signum in ours:
        signal.signal(signum, _exit_at_once)
    if ours:
        atexit.register(signal.pthread_sigmask, signal.SIG_BLOCK, ours)  # registered first: runs last


_exit_at_once_outside_main()

import typer  # noqa: E402

from fdoverlap_cli import __version__  # noqa: E402
from fdoverlap_cli.commands import instrument, nsys, ops, report, run, sweep, trace  # noqa: E402
from fdoverlap_cli.errors import ExitCode, FdoError, Interrupted  # noqa: E402

app = typer.Typer(
    name="fdoverlap",
    help="Replay recorded batches through FastDeploy's synchronous and overlapped execute_model, "
    "check that both emit the same tokens, and measure what the overlap hides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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

    \b
    Example: fdoverlap compare --sync --overlap
    """


trace.register(app)
ops.register(app)
run.register(app)
sweep.register(app)
report.register(app)
nsys.register(app)
instrument.register(app)


class _Signals:
    """SIGINT/SIGTERM/SIGHUP while main() runs raise Interrupted; each is also remembered, since a library may
    turn the exception into an error of its own. Once the command is over they are only remembered."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raising = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self.received.clear()
        self._raising = True
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def restore(self) -> None:
        """Give the handlers main() found back (a signal in between no longer raises)."""
        self._raising = False
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        if self._raising:
            raise Interrupted(signum)


_signals = _Signals()


def _interrupted(signum: int) -> int:
    print(f"fdoverlap: interrupted by signal {signum}", file=sys.stderr)
    return 128 + signum


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
    _signals.install()
    try:
        code = _run(argv)
        sys.stdout.flush()
    except Interrupted as e:  # a second signal, while the first or an error was being reported
        code = _interrupted(e.signum)
    except BrokenPipeError:  # whoever read our output stopped reading (`| head`): nothing left to say
        code = ExitCode.OK
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    finally:
        _signals.restore()
    return int(code)


def _run(argv: list[str] | None) -> int:
    try:
        # Without standalone mode Click returns the code of a typer.Exit raised inside a command.
        returned = app(args=argv, prog_name="fdoverlap", standalone_mode=False)
        return returned if isinstance(returned, int) else ExitCode.OK
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return ExitCode.SIGINT
    except Interrupted as e:
        return _interrupted(e.signum)
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except BrokenPipeError:
        raise
    except Exception as e:
        if _signals.received:  # e.g. paddle's import turns the exception into ImportError("initialization failed")
            return _interrupted(_signals.received[0])
        return _error_line(e)


def _error_line(e: Exception) -> int:
    """One line for an error: the user's (FdoError, usage, memory) or, with its type, a bug of ours."""
    if isinstance(e, FdoError):
        print(f"fdoverlap: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    if isinstance(e, ModuleNotFoundError) and e.name and not e.name.startswith("fdoverlap_cli"):
        module = e.name.split(".")[0]
        package = {"paddle": "paddlepaddle"}.get(module, module)
        print(
            f"fdoverlap: error: the Python module '{module}' is not installed: pip install {package} "
            "(or install fdoverlap with its [cpu] or [gpu] extra, which brings every dependency)",
            file=sys.stderr,
        )
        return ExitCode.BAD_INPUT
    if isinstance(e, MemoryError):
        print(f"fdoverlap: error: out of memory: {_one_line(e) or 'an allocation failed'}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if _is_usage_error(e):
        if type(e).__name__ == "NoArgsIsHelpError":  # a group called with nothing: its help
            e.show()  # type: ignore[attr-defined]
        else:
            print(f"fdoverlap: error: {_one_line(_usage_line(e))}", file=sys.stderr)
        return int(getattr(e, "exit_code", ExitCode.BAD_INPUT))
    if os.environ.get("FDOVERLAP_DEBUG"):
        raise e
    print(
        f"fdoverlap: internal error: {type(e).__name__}: {_one_line(e)} (set FDOVERLAP_DEBUG=1 for the traceback)",
        file=sys.stderr,
    )
    return ExitCode.INTERNAL


def entry_point() -> None:
    """Console-script entry: exit with main()'s code."""
    sys.exit(main())
