"""Nsight Systems-shaped SQLite exports of simulated fdoverlap runs, with the spans they must yield.

`ExportWriter` writes the rows `measure.nsys` reads, with the column names and enum values of a real
export (schema 3.20.3); given `schema_from` (a real export) it copies that export's table definitions
and enum rows instead. `simulate_export` runs a small discrete-event model of the runner's loop
(one host thread, one compute stream) on both paths and writes what Nsight Systems would record:
NVTX ranges, API calls, kernels and copies. It returns, per path, the `Span`s the definitions of
docs/architecture.md give for that run, so the nsys reader can be tested against known answers and
benchmarked on exports of any size.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fdoverlap_cli.measure import nsys
from fdoverlap_cli.measure.records import Kind, Span, Track

# The enum rows nsys writes (copied from a real 3.20.3 export).
MEMCPY_OPER = [
    (0, "CUDA_MEMCPY_KIND_UNKNOWN", "Unknown"),
    (1, "CUDA_MEMCPY_KIND_HTOD", "Host-to-Device"),
    (2, "CUDA_MEMCPY_KIND_DTOH", "Device-to-Host"),
    (8, "CUDA_MEMCPY_KIND_DTOD", "Device-to-Device"),
    (9, "CUDA_MEMCPY_KIND_HTOH", "Host-to-Host"),
    (10, "CUDA_MEMCPY_KIND_PTOP", "Peer-to-Peer"),
]
MEM_KIND = [
    (0, "CUDA_MEMOPR_MEMORY_KIND_PAGEABLE", "Pageable"),
    (1, "CUDA_MEMOPR_MEMORY_KIND_PINNED", "Pinned"),
    (2, "CUDA_MEMOPR_MEMORY_KIND_DEVICE", "Device"),
    (7, "CUDA_MEMOPR_MEMORY_KIND_UNKNOWN", "Unknown"),
]
HTOD, DTOH = 1, 2
PAGEABLE, PINNED, DEVICE = 0, 1, 2

# The columns the writer fills, as the real schema names them (NOT NULL ones included).
_TABLES = {
    nsys.META: "name TEXT NOT NULL, value TEXT",
    nsys.STRINGS: "id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL",
    nsys.NVTX: "start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, category INTEGER, text TEXT, "
    "globalTid INTEGER, textId INTEGER, domainId INTEGER, int64Value INTEGER",
    nsys.RUNTIME: "start INTEGER NOT NULL, end INTEGER NOT NULL, eventClass INTEGER NOT NULL, globalTid INTEGER, "
    "correlationId INTEGER, nameId INTEGER NOT NULL, returnValue INTEGER NOT NULL",
    nsys.KERNEL: "start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, "
    "streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, demangledName INTEGER NOT NULL, "
    "shortName INTEGER NOT NULL, registersPerThread INTEGER NOT NULL, gridX INTEGER NOT NULL, gridY INTEGER NOT NULL, "
    "gridZ INTEGER NOT NULL, blockX INTEGER NOT NULL, blockY INTEGER NOT NULL, blockZ INTEGER NOT NULL, "
    "staticSharedMemory INTEGER NOT NULL, dynamicSharedMemory INTEGER NOT NULL, "
    "localMemoryPerThread INTEGER NOT NULL, localMemoryTotal INTEGER NOT NULL, gridId INTEGER NOT NULL",
    nsys.MEMCPY: "start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, "
    "streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, bytes INTEGER NOT NULL, "
    "copyKind INTEGER NOT NULL, srcKind INTEGER, dstKind INTEGER",
    nsys.MEMCPY_KINDS: "id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT",
    nsys.MEMORY_KINDS: "id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT",
    nsys.ANALYSIS: "globalVid INTEGER NOT NULL, duration INTEGER NOT NULL, startTime INTEGER NOT NULL, "
    "stopTime INTEGER NOT NULL",
}
_INSERT = {
    nsys.NVTX: "INSERT INTO NVTX_EVENTS (start, end, eventType, category, text, globalTid, textId, domainId, "
    "int64Value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    nsys.RUNTIME: "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId, nameId, "
    "returnValue) VALUES (?, ?, 1, ?, ?, ?, 0)",
    nsys.KERNEL: "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, correlationId, "
    "globalPid, demangledName, shortName, registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, "
    "staticSharedMemory, dynamicSharedMemory, localMemoryPerThread, localMemoryTotal, gridId) "
    "VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?, 32, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 0)",
    nsys.MEMCPY: "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, streamId, correlationId, "
    "globalPid, bytes, copyKind, srcKind, dstKind) VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?, ?, ?)",
}

PID = 4242
GLOBAL_PID = (1 << 48) | (PID << 24)  # nsys's GlobalId layout: the pid above the low 24 bits of the tid


def global_tid(tid: int) -> int:
    return GLOBAL_PID | tid


class ExportWriter:
    """Rows of an Nsight Systems export, written to a new SQLite file (buffered; `close()` commits)."""

    def __init__(self, path: str | Path, *, schema_from: str | Path | None = None, version: str = "3.20.3") -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._create_tables(schema_from)
        major, minor, micro = [*version.split("."), "0", "0"][:3]
        self._db.executemany(
            f"INSERT INTO {nsys.META} (name, value) VALUES (?, ?)",
            [
                ("EXPORT_PRODUCT_NAME", "NVIDIA Nsight Systems"),
                ("EXPORT_PRODUCT_VERSION", "2025.3.2.0"),
                ("EXPORT_SCHEMA_VERSION", version),
                ("EXPORT_SCHEMA_VERSION_MAJOR", major),
                ("EXPORT_SCHEMA_VERSION_MINOR", minor),
                ("EXPORT_SCHEMA_VERSION_MICRO", micro),
            ],
        )
        self._strings: dict[str, int] = {}
        self._rows: dict[str, list[tuple]] = {table: [] for table in _INSERT}
        self._domains: dict[str, int] = {}
        self._correlation = 0
        self.first_ns: int | None = None
        self.last_ns = 0

    def _create_tables(self, schema_from: str | Path | None) -> None:
        if schema_from is None:
            for table, columns in _TABLES.items():
                self._db.execute(f"CREATE TABLE {table} ({columns})")
            self._db.executemany(f"INSERT INTO {nsys.MEMCPY_KINDS} VALUES (?, ?, ?)", MEMCPY_OPER)
            self._db.executemany(f"INSERT INTO {nsys.MEMORY_KINDS} VALUES (?, ?, ?)", MEM_KIND)
            return
        source = sqlite3.connect(f"file:{Path(schema_from).resolve()}?mode=ro", uri=True)
        try:
            for table in _TABLES:
                row = source.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
                self._db.execute(row[0] if row else f"CREATE TABLE {table} ({_TABLES[table]})")
            for table in (nsys.MEMCPY_KINDS, nsys.MEMORY_KINDS):
                self._db.executemany(
                    f"INSERT INTO {table} (id, name, label) VALUES (?, ?, ?)",
                    source.execute(f"SELECT id, name, label FROM {table}").fetchall(),
                )
        finally:
            source.close()

    def _seen(self, *times: int) -> None:
        self.first_ns = min(times) if self.first_ns is None else min(self.first_ns, *times)
        self.last_ns = max(self.last_ns, *times)

    def _add(self, table: str, row: tuple) -> None:
        rows = self._rows[table]
        rows.append(row)
        if len(rows) >= 50_000:
            self._db.executemany(_INSERT[table], rows)
            rows.clear()

    def string(self, value: str) -> int:
        """The StringIds id of `value` (registered on first use)."""
        if value not in self._strings:
            self._strings[value] = len(self._strings) + 1
            self._db.execute(f"INSERT INTO {nsys.STRINGS} (id, value) VALUES (?, ?)", (self._strings[value], value))
        return self._strings[value]

    def domain(self, name: str, tid: int = PID) -> int:
        """Create an NVTX domain (a DomainCreate event) and return its id."""
        if name not in self._domains:
            self._domains[name] = len(self._domains) + 1
            self._add(
                nsys.NVTX,
                (0, None, nsys.NVTX_DOMAIN_CREATE, None, name, global_tid(tid), None, self._domains[name], None),
            )
        return self._domains[name]

    def category(self, domain: int, category: int, name: str, tid: int = PID) -> None:
        """Name a category of `domain` (an nvtxDomainNameCategory event)."""
        self._add(nsys.NVTX, (0, None, nsys.NVTX_CATEGORY, category, name, global_tid(tid), None, domain, None))

    def nvtx_range(
        self,
        start: int,
        end: int,
        name: str | None,
        *,
        domain: int = 0,
        payload: int | None = None,
        category: int | None = None,
        tid: int = PID,
        registered: bool = True,
    ) -> None:
        """A push/pop range; its message a registered string (textId) or plain text."""
        text, text_id = (None, self.string(name)) if registered and name is not None else (name, None)
        self._add(
            nsys.NVTX, (start, end, nsys.NVTX_PUSH_POP, category, text, global_tid(tid), text_id, domain, payload)
        )
        self._seen(start, end)

    def call(self, start: int, end: int, name: str, *, tid: int = PID) -> int:
        """A CUDA API call (`name` as nsys spells it, e.g. cudaLaunchKernel_v7000); returns its correlation id."""
        self._correlation += 1
        self._add(nsys.RUNTIME, (start, end, global_tid(tid), self._correlation, self.string(name)))
        self._seen(start, end)
        return self._correlation

    def kernel(self, start: int, end: int, name: str, *, stream: int, correlation_id: int) -> None:
        name_id = self.string(name)
        self._add(nsys.KERNEL, (start, end, stream, correlation_id, GLOBAL_PID, name_id, name_id))
        self._seen(start, end)

    def memcpy(
        self, start: int, end: int, *, stream: int, correlation_id: int, kind: int, src: int, dst: int, nbytes: int
    ) -> None:
        self._add(nsys.MEMCPY, (start, end, stream, correlation_id, GLOBAL_PID, nbytes, kind, src, dst))
        self._seen(start, end)

    def close(self) -> None:
        """Write the buffered rows and the profiled window, and close the file."""
        for table, rows in self._rows.items():
            self._db.executemany(_INSERT[table], rows)
            rows.clear()
        first = self.first_ns or 0
        self._db.execute(
            f"INSERT INTO {nsys.ANALYSIS} (globalVid, duration, startTime, stopTime) VALUES (?, ?, ?, ?)",
            (1 << 48, self.last_ns - first, first, self.last_ns),
        )
        self._db.commit()
        self._db.close()


@dataclass(frozen=True)
class EngineShape:
    """What one simulated step does, in ns (host costs and GPU durations) and in counts."""

    forward_kernels: int = 6
    forward_kernel_ns: int = 40_000
    post_kernels: int = 3
    post_kernel_ns: int = 8_000
    launch_ns: int = 4_000  # host cost of one launch call
    copy_ns: int = 3_000  # each of the two DtoH copies
    insert_every: int = 3  # steps with inserts (an HtoD upload and a kernel inside insert_tasks)
    readback_every: int = 2  # steps whose preprocess reads the token count back (a synchronous pageable copy)
    save_ns: int = 30_000  # host work of save_model_output after the event wait
    host_ns: int = 10_000  # host work of each stage besides its launches
    timestamps: bool = True  # the engine's record_timestamp kernels (instrumentation, not compute)


COMPUTE_STREAM = 7
NOISE_TID = PID + 1  # another thread launching kernels outside any range: attributed to no step


class _Loop:
    """The host clock, the compute stream, and the export rows and expected spans of one path."""

    def __init__(self, w: ExportWriter, shape: EngineShape, domain: int, start_ns: int, registered: bool) -> None:
        self.w, self.shape, self.domain, self.registered = w, shape, domain, registered
        self.host = start_ns
        self.stream_free = start_ns
        self.copy_end: dict[int, int] = {}
        self.spans: list[Span] = []
        self._envelope: dict[str, list[int]] = {}  # kind -> [first start, last end] of the stage's GPU records

    def range(self, start: int, name: str, payload: int | None = None) -> None:
        self.w.nvtx_range(start, self.host, name, domain=self.domain, payload=payload, registered=self.registered)

    def launch(self, step: int | None, name: str, duration: int, expected: str | None = Kind.COMPUTE) -> None:
        """A kernel launch call on the host and the kernel on the compute stream."""
        corr = self.w.call(self.host, self.host + self.shape.launch_ns, "cudaLaunchKernel_v7000")
        start = max(self.host + self.shape.launch_ns // 2, self.stream_free)
        self.stream_free = start + duration
        self.w.kernel(start, self.stream_free, name, stream=COMPUTE_STREAM, correlation_id=corr)
        self.host += self.shape.launch_ns
        if expected is not None and step is not None:
            self._extend(expected, start, self.stream_free)

    def _extend(self, kind: str, start: int, end: int) -> None:
        """C_k and D_k are per stage: from the first record's start to the last one's end."""
        current = self._envelope.setdefault(kind, [start, end])
        current[0], current[1] = min(current[0], start), max(current[1], end)

    def _stage_gpu_spans(self, step: int) -> None:
        for kind, (start, end) in self._envelope.items():
            self.spans.append(Span(kind, step, start, end, Track.COMPUTE_STREAM))
        self._envelope.clear()

    def memcpy(self, corr: int, start: int, end: int, kind: int, src: int, dst: int, nbytes: int) -> None:
        self.w.memcpy(
            start, end, stream=COMPUTE_STREAM, correlation_id=corr, kind=kind, src=src, dst=dst, nbytes=nbytes
        )

    def async_copy(self, step: int) -> None:
        """A DtoH copy of the step's tokens into pinned memory: D_k."""
        corr = self.w.call(self.host, self.host + 2_000, "cudaMemcpyAsync_v3020")
        start = max(self.host + 1_000, self.stream_free)
        self.stream_free = start + self.shape.copy_ns
        self.memcpy(corr, start, self.stream_free, DTOH, DEVICE, PINNED, 64)
        self.host += 2_000
        self._extend(Kind.COPY, start, self.stream_free)
        self.copy_end[step] = self.stream_free

    def wait(self, iteration: int, name: str, until: int) -> None:
        """A host wait from now until `until` (at least 1 µs), then 0.5 µs to return."""
        start = self.host
        self.host = max(until, start + 1_000) + 500
        self.w.call(start, self.host, name)
        self.spans.append(Span(Kind.WAIT, iteration, start, self.host, Track.HOST))

    def read_back(self, iteration: int) -> None:
        """The token count read back: a synchronous DtoH copy into pageable memory, a wait (not D_k)."""
        start = self.host
        copy_start = max(start + 1_000, self.stream_free)
        self.stream_free = copy_start + self.shape.copy_ns
        self.host = self.stream_free + 500
        corr = self.w.call(start, self.host, "cudaMemcpy_v3020")
        self.memcpy(corr, copy_start, self.stream_free, DTOH, DEVICE, PAGEABLE, 4)
        self.spans.append(Span(Kind.WAIT, iteration, start, self.host, Track.HOST))

    def host_stage(self, kind: str, step: int, start: int, name: str) -> None:
        self.host += self.shape.host_ns
        self.range(start, name, step)
        self.spans.append(Span(kind, step, start, self.host, Track.HOST))

    def timestamp(self, step: int) -> None:
        if self.shape.timestamps:
            self.launch(step, "record_timestamp_kernel", 1_000, expected=None)

    def insert(self, k: int) -> None:
        start = self.host
        corr = self.w.call(self.host, self.host + 2_000, "cudaMemcpyAsync_v3020")
        self.memcpy(corr, self.host + 500, self.host + 1_500, HTOD, PAGEABLE, DEVICE, 256)
        self.host += 2_000
        self.launch(k, "insert_tasks_kernel", 2_000, expected=None)
        self.host_stage(Kind.INSERT, k, start, "insert_tasks")

    def preprocess(self, k: int) -> None:
        start = self.host
        if k % self.shape.readback_every == 0:
            self.read_back(k)
        self.timestamp(k)
        for i in range(self.shape.forward_kernels):
            self.launch(k, f"forward_kernel_{i % 3}", self.shape.forward_kernel_ns)
        self._stage_gpu_spans(k)
        self.host_stage(Kind.PREPROCESS, k, start, "preprocess_and_execute_model")

    def postprocess(self, k: int) -> None:
        start = self.host
        for i in range(self.shape.post_kernels):
            self.launch(k, f"postprocess_kernel_{i}", self.shape.post_kernel_ns)
        self.async_copy(k)
        self.async_copy(k)
        self.w.call(self.host, self.host + 1_000, "cudaEventRecord_v3020")  # an API call with no GPU record
        self.host += 1_000
        self.timestamp(k)
        self._stage_gpu_spans(k)
        self.host_stage(Kind.POSTPROCESS, k, start, "postprocess")

    def save(self, j: int, iteration: int) -> None:
        start = self.host
        self.wait(iteration, "cudaEventSynchronize_v3020", self.copy_end[j])
        self.host += self.shape.save_ns
        self.host_stage(Kind.SAVE, j, start, "save_model_output")

    def iteration(self, k: int, path: str) -> None:
        start = self.host
        if k % self.shape.insert_every == 0:
            self.insert(k)
        self.preprocess(k)
        if path == "overlap" and k > 0:
            self.save(k - 1, k)
        self.postprocess(k)
        if path == "sync":
            self.save(k, k)
        self.host += 2_000
        self.range(start, "step", k)
        self.spans.append(Span(Kind.ITERATION, k, start, self.host, Track.HOST))


def simulate_export(
    path: str | Path,
    steps: int = 6,
    *,
    shape: EngineShape | None = None,
    paths: tuple[str, ...] = ("sync", "overlap"),
    warmup_steps: int = 2,
    schema_from: str | Path | None = None,
    version: str = "3.20.3",
) -> dict[str, list[Span]]:
    """Write an export of `steps` steps of each path to `path`; return each path's expected spans.

    Warm-up steps run before the `measure` range (attributed to no path); the sync path's messages
    are registered strings, the overlap path's plain text; another thread launches kernels outside
    any range. Kernels named *timestamp* are the engine's instrumentation: no span expects them.
    """
    shape = shape or EngineShape()
    w = ExportWriter(path, schema_from=schema_from, version=version)
    domain = w.domain("fdoverlap")
    for category, name in enumerate(
        ("insert_tasks", "preprocess_and_execute_model", "postprocess", "save_model_output", "step"), 1
    ):
        w.category(domain, category, name)
    other = w.domain("other_library")
    loop = _Loop(w, shape, domain, start_ns=1_000_000_000, registered=True)
    for k in range(warmup_steps):
        loop.iteration(k, "sync")
    measure_start = loop.host
    expected: dict[str, list[Span]] = {}
    for p in paths:
        loop.spans = []
        loop.registered = p == "sync"
        path_start = loop.host
        for k in range(steps):
            loop.iteration(k, p)
            if k == 0:
                w.nvtx_range(path_start, loop.host, "library_range", domain=other)
        if p == "overlap" and steps:
            loop.save(steps - 1, steps - 1)
        loop.host += 5_000
        w.nvtx_range(path_start, loop.host, p, domain=domain, registered=loop.registered)
        expected[p] = loop.spans
        noise = w.call(loop.host, loop.host + 3_000, "cudaLaunchKernel_v7000", tid=NOISE_TID)
        w.kernel(
            loop.host + 1_000, loop.host + 9_000, "other_thread_kernel", stream=COMPUTE_STREAM + 1, correlation_id=noise
        )
        loop.host += 50_000
    w.nvtx_range(measure_start, loop.host, "measure", domain=domain)
    w.close()
    return expected
