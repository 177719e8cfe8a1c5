"""NVTX ranges for the stages of a step: the names of `measure/schema.py`, one category per range.

With no profiler attached (or NVTX_DISABLE set) nvtx hands out a dummy domain and the ranges
cost a Python call each; under Nsight Systems they appear on the host thread's NVTX row.
FDOVERLAP_ENGINE_NVTX=0 turns the engine's own ranges off (`fdoverlap instrument --preset fdoverlap`
puts the same ranges in from outside).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import nvtx

from fdoverlap_cli.measure.schema import DOMAIN, RANGES

ENGINE_NVTX_ENV = "FDOVERLAP_ENGINE_NVTX"


class Annotator:
    """Push/pop NVTX ranges by name; attributes are built per call only when a tool is attached."""

    def __init__(self) -> None:
        self._domain = nvtx.get_domain(DOMAIN)
        self.enabled = type(self._domain) is nvtx.Domain and os.environ.get(ENGINE_NVTX_ENV, "1") != "0"
        self._category = {name: self._domain.get_category_id(name) for name in RANGES} if self.enabled else {}

    def push(self, name: str, payload: int | None = None) -> None:
        """Open range `name` (one of schema.RANGES); `payload` is its step, or for a path the trace's id."""
        if self.enabled:
            d = self._domain
            d.push_range(d.get_event_attributes(message=name, category=self._category[name], payload=payload))

    def pop(self) -> None:
        if self.enabled:
            self._domain.pop_range()

    @contextlib.contextmanager
    def range(self, name: str, payload: int | None = None) -> Iterator[None]:
        self.push(name, payload)
        try:
            yield
        finally:
            self.pop()
