"""Nsight Systems-shaped exports of a serving loop that emits no NVTX, with the per-step answers they must give.

`write_loop` simulates one host thread and one compute stream: per step some host work, an optional
upload, the forward's kernel launches (or one CUDA graph launch), a sampler kernel, a device-to-host
copy of the sampled tokens (pinned and asynchronous, or pageable: the call returns when the copy is
done) and a host synchronisation (on the stream, or on an event recorded after the copy; with
`one_step_late` the host launches step k+1 before it waits for step k, as an overlapped loop does).
The expected values are computed here from the simulated records themselves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.nsys_export_writer import DEVICE, DTOH, GLOBAL_PID, HTOD, PAGEABLE, PINNED, ExportWriter

STREAM = 7
MEMSET_TABLE = "CUPTI_ACTIVITY_KIND_MEMSET"


@dataclass
class LoopShape:
    steps: int = 12
    kernels: int = 4  # forward kernels per step, then the sampler
    kernel_ns: int = 30_000
    launch_ns: int = 5_000
    host_ns: int = 150_000  # host work before each step's launches
    jitter_ns: tuple[int, ...] = ()  # extra host work of step i (irregular steps)
    copy: str | None = "pinned"  # the sampled tokens' copy: pinned, pageable or None
    copy_bytes: int = 128
    copy_ns: int = 2_000
    sync: str | None = "event"  # stream, event or None
    one_step_late: bool = False  # wait for step k after launching step k+1
    graph: str | None = None  # None, "graph" (one execution record) or "node" (kernels with graphNodeId)
    upload_bytes: int = 0  # an HtoD upload (pageable) before each step's forward
    sampler: str = "sample_tokens_kernel"


@dataclass
class Expected:
    """Per step (one per copy, in order): the end of its last GPU record, its kernels' union, its first kernel."""

    gpu_end: list[int] = field(default_factory=list)
    kernel_busy: list[int] = field(default_factory=list)
    first_kernel: list[int] = field(default_factory=list)
    kernels: list[int] = field(default_factory=list)
    graph_launches: list[int] = field(default_factory=list)
    pageable: list[int] = field(default_factory=list)

    def bubble(self) -> np.ndarray:
        """first kernel of step k+1 - end of step k."""
        return np.maximum(np.array(self.first_kernel[1:]) - np.array(self.gpu_end[:-1]), 0)


class _Sim:
    def __init__(self, w: ExportWriter, shape: LoopShape) -> None:
        self.w, self.s = w, shape
        self.host = 1_000_000_000
        self.free = self.host
        self.expected = Expected()
        self.events: list[tuple[int, int]] = []  # (record corr, event id)
        self.syncs: list[tuple[int, int, int, int]] = []  # (start, end, corr, event id)
        self.graph_kernels: list[int] = []  # correlation ids of graph launches (node trace)
        self.graph_execs: list[tuple[int, int, int]] = []

    def call(self, name: str, ns: int) -> tuple[int, int]:
        corr = self.w.call(self.host, self.host + ns, name)
        start = self.host
        self.host += ns
        return corr, start

    def gpu(self, ns: int, not_before: int) -> tuple[int, int]:
        start = max(not_before, self.free)
        self.free = start + ns
        return start, self.free

    def launch_step(self, k: int) -> int | None:
        s = self.s
        self.host += s.host_ns + (int(s.jitter_ns[k]) if k < len(s.jitter_ns) else 0)
        if s.upload_bytes:
            corr, t = self.call("cudaMemcpyAsync_v3020", 3_000)
            a, b = self.gpu(4_000, t + 1_000)
            self.w.memcpy(
                a, b, stream=STREAM, correlation_id=corr, kind=HTOD, src=PAGEABLE, dst=DEVICE, nbytes=s.upload_bytes
            )
        spans = []
        if s.graph:
            corr, t = self.call("cudaGraphLaunch_v10000", s.launch_ns)
            for i in range(s.kernels):
                spans.append(self.gpu(s.kernel_ns, t + s.launch_ns // 2))
                if s.graph == "node":
                    self.w.kernel(*spans[-1], f"graph_kernel_{i}", stream=STREAM, correlation_id=corr)
            if s.graph == "graph":
                self.graph_execs.append((spans[0][0], spans[-1][1], corr))
            else:
                self.graph_kernels.append(corr)
        else:
            for i in range(s.kernels):
                corr, t = self.call("cudaLaunchKernel_v7000", s.launch_ns)
                spans.append(self.gpu(s.kernel_ns, t + s.launch_ns // 2))
                self.w.kernel(*spans[-1], f"forward_kernel_{i % 2}", stream=STREAM, correlation_id=corr)
        corr, t = self.call("cudaLaunchKernel_v7000", s.launch_ns)
        spans.append(self.gpu(s.kernel_ns // 2, t + s.launch_ns // 2))
        self.w.kernel(*spans[-1], s.sampler, stream=STREAM, correlation_id=corr)
        end = spans[-1][1]
        if s.copy:
            corr, t = self.call("cudaMemcpyAsync_v3020", 2_000)
            a, end = self.gpu(s.copy_ns, t + 1_000)
            dst = PINNED if s.copy == "pinned" else PAGEABLE
            self.w.memcpy(
                a, end, stream=STREAM, correlation_id=corr, kind=DTOH, src=DEVICE, dst=dst, nbytes=s.copy_bytes
            )
            if s.copy == "pageable":  # CUDA returns from the call once the copy is done
                self.host = max(self.host, end + 1_000)
        e = self.expected
        union = sum(b - a for a, b in _merge(spans))
        e.gpu_end.append(end)
        e.kernel_busy.append(union)
        e.first_kernel.append(spans[0][0])
        e.kernels.append(s.kernels + 1 if s.graph != "graph" else 2)
        e.graph_launches.append(1 if s.graph else 0)
        e.pageable.append(1 if s.copy == "pageable" else 0)
        if s.sync == "event":
            record, _ = self.call("cudaEventRecord_v3020", 1_000)
            self.events.append((record, k % 2))
            return record
        return None

    def wait(self, k: int, record: int | None, until: int) -> None:
        s = self.s
        if s.sync == "stream":
            start = self.host
            self.host = max(until, start + 1_000) + 500
            self.w.call(start, self.host, "cudaStreamSynchronize_v3020")
        elif s.sync == "event":
            start = self.host
            self.host = max(until, start + 1_000) + 500
            corr = self.w.call(start, self.host, "cudaEventSynchronize_v3020")
            self.syncs.append((start, self.host, corr, k % 2))

    def run(self) -> None:
        pending = None
        for k in range(self.s.steps):
            record = self.launch_step(k)
            if self.s.one_step_late:
                if pending is not None:
                    self.wait(k - 1, *pending)
                pending = (record, self.expected.gpu_end[-1])
            else:
                self.wait(k, record, self.expected.gpu_end[-1])
        if pending is not None:
            self.wait(self.s.steps - 1, *pending)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def write_loop(path: str | Path, shape: LoopShape | None = None) -> Expected:
    """Write the export of `shape`'s loop to `path`; return what each step must measure."""
    shape = shape or LoopShape()
    w = ExportWriter(path)
    sim = _Sim(w, shape)
    sim.run()
    w.close()
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TABLE CUPTI_ACTIVITY_KIND_CUDA_EVENT (deviceId INTEGER, contextId INTEGER, streamId INTEGER, "
            "correlationId INTEGER, globalPid INTEGER, eventId INTEGER NOT NULL, eventSyncId INTEGER)"
        )
        db.executemany(
            "INSERT INTO CUPTI_ACTIVITY_KIND_CUDA_EVENT VALUES (0, 1, ?, ?, ?, ?, 0)",
            [(STREAM, corr, GLOBAL_PID, event) for corr, event in sim.events],
        )
        db.execute(
            "CREATE TABLE CUPTI_ACTIVITY_KIND_SYNCHRONIZATION (start INTEGER, end INTEGER, deviceId INTEGER, "
            "contextId INTEGER, streamId INTEGER, correlationId INTEGER, globalPid INTEGER, syncType INTEGER, "
            "eventId INTEGER)"
        )
        db.executemany(
            "INSERT INTO CUPTI_ACTIVITY_KIND_SYNCHRONIZATION VALUES (?, ?, 0, 1, ?, ?, ?, 1, ?)",
            [(a, b, STREAM, corr, GLOBAL_PID, event) for a, b, corr, event in sim.syncs],
        )
        if "graphNodeId" not in {row[1] for row in db.execute("PRAGMA table_info(CUPTI_ACTIVITY_KIND_KERNEL)")}:
            db.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL ADD COLUMN graphNodeId INTEGER")
        db.executemany(
            "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET graphNodeId = 1 WHERE correlationId = ?",
            [(c,) for c in sim.graph_kernels],
        )
        if sim.graph_execs:
            db.execute(
                "CREATE TABLE CUPTI_ACTIVITY_KIND_GRAPH_TRACE (start INTEGER, end INTEGER, deviceId INTEGER, "
                "contextId INTEGER, streamId INTEGER, correlationId INTEGER, globalPid INTEGER, graphId INTEGER)"
            )
            db.executemany(
                "INSERT INTO CUPTI_ACTIVITY_KIND_GRAPH_TRACE VALUES (?, ?, 0, 1, ?, ?, ?, 1)",
                [(a, b, STREAM, corr, GLOBAL_PID) for a, b, corr in sim.graph_execs],
            )
        db.commit()
    finally:
        db.close()
    return sim.expected
