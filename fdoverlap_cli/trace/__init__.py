"""Traces: the recorded batches a replay runs. Load, validate, save."""

from __future__ import annotations

import os

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import write_text
from fdoverlap_cli.trace.format import Insert, Request, Step, Trace, TraceConfig, dumps, read_json_file
from fdoverlap_cli.trace.format import trace_from_dict as _from_dict
from fdoverlap_cli.trace.validate import validate

__all__ = ["Insert", "Request", "Step", "Trace", "TraceConfig", "load_trace", "save_trace", "validate"]


def load_trace(path: str | os.PathLike[str], *, check: bool = True) -> Trace:
    """Read, decode and (unless check=False) validate a trace file.

    Every problem is an InputError whose text starts with the file and the JSON path.
    """
    doc = read_json_file(path, "trace file")
    try:
        trace = _from_dict(doc)
        if check:
            validate(trace)
    except InputError as e:
        raise InputError(f"{os.fspath(path)}: {e.where}" if e.where else os.fspath(path), e.reason) from None
    return trace


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write a trace atomically, byte-identical for identical traces."""
    write_text(path, dumps(trace))
