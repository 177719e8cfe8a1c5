"""The interval records every timing source produces and every metric consumes.

The engine's own timing and the Nsight Systems reader both yield `Span`s, so one metrics
module serves both. All times are int64 nanoseconds on one clock (the host's CLOCK_MONOTONIC
for the engine's timing, with GPU timestamps aligned to it; the report's clock for nsys).
"""

from __future__ import annotations

from dataclasses import dataclass


class Kind:
    """What a span measures. GPU kinds feed C_k and D_k; host kinds feed S_k and B_k."""

    COMPUTE = "compute"  # GPU: step k's forward and postprocess kernels (part of C_k)
    COPY = "copy"  # GPU: step k's device-to-host copies (D_k)
    SAVE = "save"  # host: save_model_output(k), event wait start to send end (S_k)
    ITERATION = "iteration"  # host: the loop iteration that launched step k (inserts included)
    WAIT = "wait"  # host: time inside an iteration spent waiting on the GPU (not busy)
    INSERT = "insert"  # host: insert_tasks for step k
    PREPROCESS = "preprocess"  # host: preprocess_and_execute_model(k)
    POSTPROCESS = "postprocess"  # host: postprocess(k)

    GPU = (COMPUTE, COPY)
    HOST = (SAVE, ITERATION, WAIT, INSERT, PREPROCESS, POSTPROCESS)


class Track:
    """Where a span ran: the host thread or a GPU stream."""

    HOST = "host"
    COMPUTE_STREAM = "gpu:compute"
    COPY_STREAM = "gpu:copy"


@dataclass(frozen=True, slots=True)
class Span:
    """One interval [start_ns, end_ns) of `kind` belonging to step `step`, on `track`."""

    kind: str
    step: int
    start_ns: int
    end_ns: int
    track: str = Track.HOST

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns
