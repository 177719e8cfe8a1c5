"""Options and parsers shared by several commands, and the rules every command's output files follow.

Outputs (`Outputs.check` before any work, `Outputs.wrote` after each file): an output never names one of
the command's inputs or another output; `-` is standard output for any one output (then the command's
table goes to stderr, and --json, which needs standard output too, is refused); each file written is
one line, `wrote NAME`, on stdout, or on stderr where stdout holds JSON or an output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from fdoverlap_cli.errors import FdoError, InputError

WindowOpt = Annotated[str | None, typer.Option("--window", help="Steps the metrics cover, FIRST:LAST (inclusive).")]
TimelineOpt = Annotated[
    Path | None, typer.Option("--timeline", help="Write a Perfetto/Chrome trace-event file ('-': stdout).")
]
SvgOpt = Annotated[Path | None, typer.Option("--svg", help="Write the figure as SVG ('-': stdout).")]
HtmlOpt = Annotated[
    Path | None,
    typer.Option("--html", help="Write one self-contained HTML report: tables, figures, environment ('-': stdout)."),
]
MarkdownOpt = Annotated[
    Path | None,
    typer.Option("--markdown", help="Write the summary table and checks as GitHub markdown, to paste ('-': stdout)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
STDOUT = "-"


def choices(*values: str) -> str:
    """The metavar that shows an option's choices in the help: [a|b|c]."""
    return f"[{'|'.join(values)}]"


def parse_window(text: str | None, option: str = "--window") -> tuple[int, int] | None:
    """'FIRST:LAST' -> (first, last); None stays None. `option` names the flag in the error."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if match is None or int(match[1]) > int(match[2]):
        raise FdoError(f"{option}: expected FIRST:LAST step numbers with 0 <= FIRST <= LAST, got '{text}'")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Outputs:
    """A command's output files by flag (None: not asked for), and whether --json prints the summary."""

    files: Mapping[str, Path | str | None]
    as_json: bool = False

    @property
    def to_stdout(self) -> bool:
        """Whether an output file goes to standard output (the table then goes to stderr)."""
        return any(p is not None and os.fspath(p) == STDOUT for p in self.files.values())

    @property
    def messages_to_stderr(self) -> bool:
        return self.as_json or self.to_stdout

    def check(self, inputs: Mapping[str, Path | str | None] | None = None) -> None:
        """Refuse, before any work, an output that cannot be written, that is an input or another output,
        or a second user of standard output."""
        from fdoverlap_cli.fileio import check_writable, refuse_overwriting_inputs

        on_stdout = [flag for flag, p in self.files.items() if p is not None and os.fspath(p) == STDOUT]
        if len(on_stdout) > 1:
            raise InputError(f"{on_stdout[1]} -", f"{on_stdout[0]} already writes to standard output")
        if on_stdout and self.as_json:
            raise InputError("--json", f"cannot print the summary to standard output when {on_stdout[0]} goes there")
        refuse_overwriting_inputs(self.files, inputs)
        for p in self.files.values():
            if p is not None:
                check_writable(p)

    def wrote(self, flag: str, what: str = "") -> None:
        """Say in one line that the output of `flag` was written."""
        p = self.files[flag]
        name = "standard output" if os.fspath(p) == STDOUT else os.fspath(p)
        typer.echo(f"wrote {name}" + (f" ({what})" if what else ""), err=self.messages_to_stderr)
