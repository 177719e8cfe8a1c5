"""Options and parsers shared by several commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from fdoverlap_cli.errors import FdoError

WindowOpt = Annotated[str | None, typer.Option("--window", help="Steps the metrics cover, FIRST:LAST (inclusive).")]
TimelineOpt = Annotated[Path | None, typer.Option("--timeline", help="Write a Perfetto/Chrome trace-event file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def parse_window(text: str | None) -> tuple[int, int] | None:
    """'FIRST:LAST' -> (first, last); None stays None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if match is None or int(match[1]) > int(match[2]):
        raise FdoError(f"--window: expected FIRST:LAST step numbers with 0 <= FIRST <= LAST, got '{text}'")
    return int(match[1]), int(match[2])
