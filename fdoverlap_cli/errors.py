"""The exceptions the CLI turns into one line and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1  # the run worked and a check failed (e.g. tokens differ)
    BAD_INPUT = 2  # bad input or usage
    INTERNAL = 70  # a bug in fdoverlap (EX_SOFTWARE)
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143


def clip(text: str, limit: int = 60) -> str:
    """`text` as an error message shows it: a value longer than `limit` characters cut, with its length."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}…{text[-12:]} ({len(text):,} characters)"


class FdoError(Exception):
    """An error the user can act on: printed as one line, never as a traceback."""

    exit_code: int = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(FdoError):
    """Bad input, with where it is wrong: a file, a JSON path, a line, an option."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where = where
        self.reason = reason


class OptionError(FdoError):
    """A setting the engine cannot run with, named as the engine names it (`token_count`, `device`).

    The CLI maps `option` to its flag; elsewhere the message reads "option: reason".
    """

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class CheckFailed(FdoError):
    """The run completed and found what it checks for to be wrong."""

    exit_code = ExitCode.CHECK_FAILED


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; carries the exit code 128 + signal number.

    A BaseException so that `except Exception` in cleanup paths does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


def first_line(e: BaseException) -> str:
    """An exception as one line: paddle's messages carry a C++ trace and the source location after the first."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
