"""The replay's own timing: host times per stage and GPU timestamps at the stage boundaries, per step.

Host times are CLOCK_MONOTONIC ns taken by the host thread. GPU times come from the
`record_timestamp` op at six points of each step's device work, written into one device buffer
and read back once at the end (or when a run is interrupted). Storage is columnar (one int64 array
per column, allocated for the whole trace up front) so a 100k-step replay stays compact and flat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.measure.schema import GPU_POINTS, HOST_COLUMNS, WAIT_COLUMNS, WAIT_KINDS, GpuPoint

WAITS_PER_STEP = 4  # the token-count read-back, the save's event wait, back-pressure, token_num_event (Kind.WAITS)


class StepRecorder:
    """Collects one row per executed step; `gpu` points are recorded on the device when `timestamps` is on."""

    def __init__(self, device: Any, capacity: int, timestamps: bool) -> None:
        self.device = device
        self.capacity = capacity
        # Preallocated: memory is taken once, at the start, not a little every step of a long run.
        self.columns = {name: np.full(capacity, -1, dtype=np.int64) for name in HOST_COLUMNS}
        self.waits = {name: np.full(WAITS_PER_STEP * capacity, -1, dtype=np.int64) for name in WAIT_COLUMNS}
        self.wait_rows = 0
        self.timestamps = timestamps
        self._gpu = device.empty([capacity * len(GPU_POINTS)], "int64") if timestamps else None
        if self._gpu is not None:
            device.ops.fill_(self._gpu, -1)
        self.rows = 0

    def new_row(self, step: int) -> int:
        """Start the record of an executed step; returns its row."""
        if self.rows >= self.capacity:
            raise RuntimeError(f"step recorder is full ({self.capacity} rows)")
        self.columns["step"][self.rows] = step
        self.rows += 1
        return self.rows - 1

    def set(self, row: int, column: str, value: int) -> None:
        self.columns[column][row] = value

    def add(self, row: int, column: str, value: int) -> None:
        self.columns[column][row] = max(int(self.columns[column][row]), 0) + value

    def emitted(self, row: int, producers: list[tuple[int, int]], preempted: np.ndarray) -> None:
        """The tokens step `row`'s message carries: its producers' slots, less those sent a preemption marker."""
        marked = np.flatnonzero(preempted == 1)
        lost = len(set(marked.tolist()) & {slot for slot, _ in producers}) if len(marked) else 0
        self.columns["emitted"][row] = len(producers) - lost

    def mark(self, row: int, point: GpuPoint, stream: Any = None) -> None:
        """GPU timestamp `point` of `row`, taken when `stream` reaches this point."""
        if self._gpu is not None:
            self.device.timestamp(self._gpu, row * len(GPU_POINTS) + point, stream)

    def wait(self, iteration_step: int, start: int, end: int, kind: str = Kind.WAIT) -> None:
        """A host wait on the GPU inside the iteration of `iteration_step`; `kind` says which (schema.WAIT_KINDS)."""
        if self.wait_rows == len(self.waits["wait_step"]):  # more waits than foreseen: grow (rare)
            self.waits = {name: np.concatenate([col, np.full_like(col, -1)]) for name, col in self.waits.items()}
        for name, value in zip(WAIT_COLUMNS, (iteration_step, start, end, WAIT_KINDS.index(kind)), strict=True):
            self.waits[name][self.wait_rows] = value
        self.wait_rows += 1

    def gpu_times(self) -> np.ndarray | None:
        """[rows, 6] device-clock times (-1 where not reached); synchronizes the device first."""
        if self._gpu is None:
            return None
        self.device.synchronize()
        return self._gpu.numpy().reshape(self.capacity, len(GPU_POINTS))[: self.rows].copy()

    def host_table(self) -> dict[str, np.ndarray]:
        table = {name: col[: self.rows].copy() for name, col in self.columns.items()}
        table.update({name: col[: self.wait_rows].copy() for name, col in self.waits.items()})
        return table
