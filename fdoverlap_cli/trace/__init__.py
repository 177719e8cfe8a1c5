"""Traces: the recorded batches a replay runs. Load, validate, save."""

from __future__ import annotations

import hashlib
import os

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import read_input, write_text
from fdoverlap_cli.trace.format import Insert, Request, Step, Trace, TraceConfig, decode_json, dumps
from fdoverlap_cli.trace.format import trace_from_dict as _from_dict
from fdoverlap_cli.trace.validate import validate

__all__ = [
    "Insert",
    "Request",
    "Step",
    "Trace",
    "TraceConfig",
    "load_trace",
    "load_trace_and_digest",
    "save_trace",
    "validate",
]


def load_trace(path: str | os.PathLike[str], *, check: bool = True) -> Trace:
    """Read, decode and (unless check=False) validate a trace file.

    Every problem is an InputError whose text starts with the file and the JSON path.
    """
    return load_trace_and_digest(path, check=check)[0]


def load_trace_and_digest(path: str | os.PathLike[str], *, check: bool = True) -> tuple[Trace, str]:
    """`load_trace`, and the sha256 of the bytes the trace was read from: what a run records, whatever
    happens to the file (or the pipe) afterwards."""
    raw = read_input(path, "trace file")
    doc = decode_json(raw, os.fspath(path))
    try:
        trace = _from_dict(doc)
        if check:
            validate(trace)
    except InputError as e:
        raise InputError(f"{os.fspath(path)}: {e.where}" if e.where else os.fspath(path), e.reason) from None
    return trace, hashlib.sha256(raw).hexdigest()


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write a trace atomically, byte-identical for identical traces."""
    write_text(path, dumps(trace))
