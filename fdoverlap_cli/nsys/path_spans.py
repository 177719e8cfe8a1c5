"""The growing state of one path while `steps` attributes an export: its span columns, intervals and tracks.

A GPU record extends the interval of its (kind, step, stream, stage), first start to last end; the
intervals of a step are emitted once no more of its work can arrive in launch order. Tracks get
their names (host, gpu:compute, gpu:copy) once every span is known.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fdoverlap_cli.measure.records import KIND_CODE, Kind, SpanTable, Track
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.kernel_idle import IdleLedger

COMPUTE, COPY, ITERATION = (KIND_CODE[k] for k in (Kind.COMPUTE, Kind.COPY, Kind.ITERATION))


@dataclass
class GpuWork:
    """Count and summed duration of GPU records (kernels or copies)."""

    count: int = 0
    total_ns: int = 0

    def add(self, start: int, end: int) -> None:
        self.count += 1
        self.total_ns += end - start

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "total_ns": self.total_ns}


class SpanColumns:
    """Span columns growing row by row (compact: 27 bytes a span)."""

    def __init__(self) -> None:
        self.kind, self.step, self.start, self.end, self.track = (
            array("b"),
            array("q"),
            array("q"),
            array("q"),
            array("h"),
        )

    def add(self, kind: int, step: int, start: int, end: int, track: int) -> None:
        self.kind.append(kind)
        self.step.append(step)
        self.start.append(start)
        self.end.append(end)
        self.track.append(track)

    def table(self, track_names: tuple[str, ...]) -> SpanTable:
        return SpanTable(
            np.frombuffer(self.kind, np.int8).copy(),
            np.frombuffer(self.step, np.int64).copy(),
            np.frombuffer(self.start, np.int64).copy(),
            np.frombuffer(self.end, np.int64).copy(),
            np.frombuffer(self.track, np.int16).copy(),
            track_names,
        )


@dataclass
class PathBuilder:
    name: str
    columns: SpanColumns = field(default_factory=SpanColumns)
    growing: dict[tuple[int, int, int, str], list[int]] = field(default_factory=dict)  # (kind, step, track, stage)
    opened: set[tuple[int, str]] = field(default_factory=set)  # (step, stage) whose C_k interval has begun
    first_kernel: dict[int, int] = field(default_factory=dict)  # step -> start of its first kernel of C_k
    kernel_busy_ns: int = 0  # |union of the C_k kernels themselves|, summed as they arrive
    kernel_idle: IdleLedger = field(default_factory=IdleLedger)  # the union's gaps and gains, by step (kernel_idle)
    _busy: list[int] | None = None  # the union's interval still growing
    newest_step: int = -(2**62)
    iteration: tuple[int, int, int, int] | None = None  # (step, start, end, track) until we know the step ran
    iteration_ran: bool = False
    flows: list[tuple] = field(default_factory=list)
    work: dict[str, GpuWork] = field(default_factory=dict)
    idle_iterations: int = 0

    def count(self, what: str, start: int, end: int) -> None:
        self.work.setdefault(what, GpuWork()).add(start, end)

    def gpu(self, kind: int, step: int, start: int, end: int, track: int, stage: str, call: str = "") -> None:
        """Extend the (kind, step, track, stage) interval to cover a GPU record: first start to last end;
        `call`: the API call that launched it (where a C_k record that ends a gap of the union waited)."""
        self._extend(kind, step, start, end, track, stage)
        if kind == COMPUTE:
            self.opened.add((step, stage))
            self._add_busy(start, end, step, stage, call)
            self.first_kernel[step] = min(start, self.first_kernel.get(step, start))

    def open_stage(self, step: int, start: int, end: int, track: int, stage: str) -> None:
        """A timing kernel launched in a compute stage before any of its kernels: the engine's stage-start
        timestamp, where the tool's own timing starts C_k. It opens the stage's interval (and is no kernel of
        C_k: not in the kernels-only busy time)."""
        if (step, stage) not in self.opened:
            self.opened.add((step, stage))
            self._extend(COMPUTE, step, start, end, track, stage)

    def _extend(self, kind: int, step: int, start: int, end: int, track: int, stage: str) -> None:
        key = (kind, step, track, stage)
        current = self.growing.get(key)
        if current is not None:
            current[0], current[1] = min(current[0], start), max(current[1], end)
        else:
            self.growing[key] = [start, end]
        if step > self.newest_step:
            self.newest_step = step
            self._settle(older_than=step - 1)

    def _add_busy(self, start: int, end: int, step: int, stage: str, call: str) -> None:
        # Kernels of one stream run in launch order, so the union grows at its end or starts anew; what it
        # gains goes to the record's step, a gap it starts anew after to the record (nsys/kernel_idle.py).
        if self._busy is not None and start <= self._busy[1]:
            self.kernel_idle.busy(step, end - self._busy[1])
            self._busy[1] = max(self._busy[1], end)
            return
        if self._busy is not None:
            self.kernel_busy_ns += self._busy[1] - self._busy[0]
            self.kernel_idle.gap(step, stage, call, start - self._busy[1])
        self.kernel_idle.busy(step, end - start)
        self._busy = [start, end]

    def _settle(self, older_than: int) -> None:
        """Emit the growing intervals of steps before `older_than`: no more work of theirs is coming in order."""
        for key in [key for key in self.growing if key[1] < older_than]:
            s, e = self.growing.pop(key)
            self.columns.add(key[0], key[1], s, e, key[2])  # key: (kind, step, track, stage)
        self.opened = {key for key in self.opened if key[0] >= older_than}

    def begin_iteration(self, step: int, start: int, end: int, track: int) -> None:
        self.end_iteration()
        self.iteration, self.iteration_ran = (step, start, end, track), False

    def end_iteration(self) -> None:
        if self.iteration is not None:
            step, start, end, track = self.iteration
            if self.iteration_ran:
                self.columns.add(ITERATION, step, start, end, track)
            else:
                self.idle_iterations += 1
        self.iteration = None

    def finish(self) -> None:
        self.end_iteration()
        self._settle(older_than=2**62)
        if self._busy is not None:
            self.kernel_busy_ns += self._busy[1] - self._busy[0]
            self._busy = None


class Tracks:
    """Track codes for host threads and GPU streams; named once every span is known."""

    def __init__(self) -> None:
        self.code: dict[tuple[str, int], int] = {}

    def __call__(self, what: str, ident: int) -> int:
        return self.code.setdefault((what, ident), len(self.code))

    def names(self, paths: Iterable[PathBuilder]) -> tuple[str, ...]:
        """Host: the thread of the path ranges; gpu:compute: the stream running the most C_k; gpu:copy: a
        stream with D_k and no C_k; other threads and streams by their ids."""
        compute: dict[int, int] = {}
        copies: dict[int, int] = {}
        for p in paths:
            kinds, tracks = np.frombuffer(p.columns.kind, np.int8), np.frombuffer(p.columns.track, np.int16)
            for code, n in zip(*np.unique(tracks[kinds == COMPUTE], return_counts=True), strict=True):
                compute[int(code)] = compute.get(int(code), 0) + int(n)
            for code, n in zip(*np.unique(tracks[kinds == COPY], return_counts=True), strict=True):
                copies[int(code)] = copies.get(int(code), 0) + int(n)
        compute_stream = max(compute, key=compute.__getitem__, default=None)
        copy_only = {c: n for c, n in copies.items() if c not in compute}
        copy_stream = max(copy_only, key=copy_only.__getitem__, default=None)
        names = [""] * len(self.code)
        host_named = False
        for (what, ident), code in self.code.items():
            if what == "thread":
                names[code] = f"host:{ident & ((1 << nsys.TID_BITS) - 1)}" if host_named else Track.HOST
                host_named = True
            elif code == compute_stream:
                names[code] = Track.COMPUTE_STREAM
            elif code == copy_stream:
                names[code] = Track.COPY_STREAM
            else:
                names[code] = f"gpu:stream {ident}"
        return tuple(names)
