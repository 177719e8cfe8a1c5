"""NVTX ranges for the stages of a step: domain `fdoverlap`, one category per stage, the step as payload.

With no profiler attached (or NVTX_DISABLE set) nvtx hands out a dummy domain and the ranges
cost a Python call each; under Nsight Systems they appear on the host thread's NVTX row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nvtx

DOMAIN = "fdoverlap"

# Stage names as in FastDeploy's model runner, plus the replay's own ranges.
INSERT_TASKS = "insert_tasks"
PREPROCESS = "preprocess_and_execute_model"
POSTPROCESS = "postprocess"
SAVE = "save_model_output"
STEP = "step"  # one loop iteration: the step index it launched is the payload
MEASURE = "measure"  # the measured part of a run: a capture range for `nsys profile -c nvtx -p measure@fdoverlap`
PATH_RANGES = ("sync", "overlap")
RANGES = (INSERT_TASKS, PREPROCESS, POSTPROCESS, SAVE, STEP, MEASURE, *PATH_RANGES)


class Annotator:
    """Push/pop NVTX ranges by name; attributes are built per call only when a tool is attached."""

    def __init__(self) -> None:
        self._domain = nvtx.get_domain(DOMAIN)
        self.enabled = type(self._domain) is nvtx.Domain
        self._category = {name: self._domain.get_category_id(name) for name in RANGES} if self.enabled else {}

    def push(self, name: str, step: int | None = None) -> None:
        if self.enabled:
            d = self._domain
            d.push_range(d.get_event_attributes(message=name, category=self._category[name], payload=step))

    def pop(self) -> None:
        if self.enabled:
            self._domain.pop_range()

    @contextlib.contextmanager
    def range(self, name: str, step: int | None = None) -> Iterator[None]:
        self.push(name, step)
        try:
            yield
        finally:
            self.pop()
