"""Synthetic timelines of the sync and overlap paths: Spans from per-step durations, no GPU needed.

A small discrete-event model of the runner's loop: one host thread, one compute stream (and an
optional copy stream). A kernel starts when it is launched and its stream is free; a save waits
for its step's copies. It exists so metrics, timelines and figures can be tested and benchmarked
on known schedules:

- sync     iteration k: insert, preprocess(k) (launches the forward), postprocess(k) (launches
           postprocess kernels and the DtoH copy), save(k) (waits for the copy, sends).
- overlap  iteration k: insert, preprocess(k), save(k-1), postprocess(k); save of the last step
           after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from fdoverlap_cli.measure.records import Kind, Span, Track

PATHS = ("sync", "overlap")


@dataclass(frozen=True)
class StepCosts:
    """Durations in ns of the pieces of one step; a sequence gives one value per step."""

    insert: int | list[int] = 10_000  # host: insert_tasks
    preprocess: int | list[int] = 60_000  # host: pack the batch, launch the forward
    forward: int | list[int] = 400_000  # GPU: the forward pass
    postprocess: int | list[int] = 50_000  # host: launch the postprocess kernels and the copy
    postprocess_gpu: int | list[int] = 40_000  # GPU: sampling and the step ops
    copy: int | list[int] = 5_000  # GPU: DtoH copy of the tokens and the stop flag
    save: int | list[int] = 30_000  # host: build and send the message once the copy landed

    def per_step(self, steps: int) -> dict[str, list[int]]:
        """Each field as a list of `steps` ints."""
        return {
            f.name: np.broadcast_to(np.asarray(getattr(self, f.name), dtype=np.int64), (steps,)).tolist()
            for f in fields(self)
        }


class _Loop:
    """The host clock, the streams' free times, and the spans emitted so far."""

    def __init__(self, start_ns: int, copy_stream: bool) -> None:
        self.host = start_ns
        self.compute_free = start_ns
        self.copy_free = start_ns
        self.copy_stream = copy_stream
        self.copy_end: dict[int, int] = {}
        self.spans: list[Span] = []

    def host_stage(self, kind: str, step: int, duration: int) -> None:
        self.spans.append(Span(kind, step, self.host, self.host + duration, Track.HOST))
        self.host += duration

    def kernel(self, step: int, duration: int) -> int:
        start = max(self.host, self.compute_free)
        self.compute_free = start + duration
        self.spans.append(Span(Kind.COMPUTE, step, start, self.compute_free, Track.COMPUTE_STREAM))
        return self.compute_free

    def copy(self, step: int, duration: int, after: int) -> None:
        if self.copy_stream:
            start = max(after, self.copy_free)
            self.copy_free = start + duration
            track = Track.COPY_STREAM
        else:
            start = max(after, self.compute_free)
            self.compute_free = start + duration
            track = Track.COMPUTE_STREAM
        self.spans.append(Span(Kind.COPY, step, start, start + duration, track))
        self.copy_end[step] = start + duration

    def save(self, step: int, iteration_step: int, duration: int) -> None:
        start = self.host
        ready = max(start, self.copy_end[step])
        if ready > start:
            self.spans.append(Span(Kind.WAIT, iteration_step, start, ready, Track.HOST))
        self.host = ready + duration
        self.spans.append(Span(Kind.SAVE, step, start, self.host, Track.HOST))


def simulate(
    path: str, steps: int, costs: StepCosts | None = None, *, start_ns: int = 0, copy_stream: bool = False
) -> list[Span]:
    """The spans of `steps` steps (numbered 0..steps-1) of `path` ("sync" or "overlap")."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    c = (costs or StepCosts()).per_step(steps)
    loop = _Loop(start_ns, copy_stream)
    for k in range(steps):
        iteration_start = loop.host
        loop.host_stage(Kind.INSERT, k, c["insert"][k])
        loop.host_stage(Kind.PREPROCESS, k, c["preprocess"][k])
        loop.kernel(k, c["forward"][k])
        if path == "overlap" and k > 0:
            loop.save(k - 1, k, c["save"][k - 1])
        loop.host_stage(Kind.POSTPROCESS, k, c["postprocess"][k])
        loop.copy(k, c["copy"][k], after=loop.kernel(k, c["postprocess_gpu"][k]))
        if path == "sync":
            loop.save(k, k, c["save"][k])
        loop.spans.append(Span(Kind.ITERATION, k, iteration_start, loop.host, Track.HOST))
    if path == "overlap" and steps:
        loop.save(steps - 1, steps - 1, c["save"][steps - 1])
    return loop.spans
