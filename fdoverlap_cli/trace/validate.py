"""Checks of everything the replay relies on (placeholder until the trace issue lands)."""

from __future__ import annotations

from fdoverlap_cli.trace.format import Trace


def validate(trace: Trace) -> None:
    """Raise InputError(json_path, reason) for the first rule the trace breaks."""
