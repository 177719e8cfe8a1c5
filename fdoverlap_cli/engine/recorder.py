"""The replay's own timing: host times per stage and GPU timestamps at the stage boundaries, per step.

Host times are CLOCK_MONOTONIC ns taken by the host thread. GPU times come from the
`record_timestamp` op at six points of each step's device work, written into one device buffer
and read back once at the end (or when a run is interrupted). Storage is columnar (one int64 array
per column) so a 100k-step replay stays compact.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

# GPU points of one step, in stream order.
GPU_POINTS = ("gpu_pre_start", "gpu_fwd_end", "gpu_post_start", "gpu_post_end", "gpu_copy_start", "gpu_copy_end")
# Host columns of one executed step (-1: did not happen).
HOST_COLUMNS = (
    "step",  # the trace step this executed step is
    "tokens",  # packed tokens of the batch
    "generated",  # slots that emit a token at this step
    "running",  # slots that ran
    "prefill_tokens",
    "model_ns",  # host time launching the model's own work (forward, logits, sampling); the rest is harness
    "iter_start",  # the loop iteration that launched the step (inserts included)
    "iter_end",
    "insert_start",
    "insert_end",
    "pre_start",
    "pre_end",
    "post_start",
    "post_end",
    "save_start",  # save_model_output of this step (in the next iteration on the overlap path)
    "save_end",
)
WAIT_COLUMNS = ("wait_step", "wait_start", "wait_end")  # host waits on the GPU; wait_step: the iteration's step


class StepRecorder:
    """Collects one row per executed step; `gpu` points are recorded on the device when `timestamps` is on."""

    def __init__(self, device: Any, capacity: int, timestamps: bool) -> None:
        self.device = device
        self.capacity = capacity
        self.columns = {name: array("q") for name in HOST_COLUMNS}
        self.waits = {name: array("q") for name in WAIT_COLUMNS}
        self.timestamps = timestamps
        self._gpu = device.empty([capacity * len(GPU_POINTS)], "int64") if timestamps else None
        if self._gpu is not None:
            device.ops.fill_(self._gpu, -1)
        self.rows = 0

    def new_row(self, step: int) -> int:
        """Start the record of an executed step; returns its row."""
        if self.rows >= self.capacity:
            raise RuntimeError(f"step recorder is full ({self.capacity} rows)")
        for name, col in self.columns.items():
            col.append(step if name == "step" else -1)
        self.rows += 1
        return self.rows - 1

    def set(self, row: int, column: str, value: int) -> None:
        self.columns[column][row] = value

    def add(self, row: int, column: str, value: int) -> None:
        self.columns[column][row] = max(self.columns[column][row], 0) + value

    def mark(self, row: int, point: int, stream: Any = None) -> None:
        """GPU timestamp `GPU_POINTS[point]` of `row`, taken when `stream` reaches this point."""
        if self._gpu is not None:
            self.device.timestamp(self._gpu, row * len(GPU_POINTS) + point, stream)

    def wait(self, iteration_step: int, start: int, end: int) -> None:
        for name, value in zip(WAIT_COLUMNS, (iteration_step, start, end), strict=True):
            self.waits[name].append(value)

    def gpu_times(self) -> np.ndarray | None:
        """[rows, 6] device-clock times (-1 where not reached); synchronizes the device first."""
        if self._gpu is None:
            return None
        self.device.synchronize()
        return self._gpu.numpy().reshape(self.capacity, len(GPU_POINTS))[: self.rows].copy()

    def host_table(self) -> dict[str, np.ndarray]:
        table = {name: np.frombuffer(col, dtype=np.int64).copy() for name, col in self.columns.items()}
        table.update({name: np.frombuffer(col, dtype=np.int64).copy() for name, col in self.waits.items()})
        return table
