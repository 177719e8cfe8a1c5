"""Nsight Systems-shaped SQLite files for tests: the rows `nsys/export.py` reads, written by hand.

`ExportWriter` writes them with the column names and enum values of a real export (schema 3.20.3);
given `schema_from` (a real export) it copies that export's table definitions and enum rows instead.
The loop model (tests/loop_model.py) writes whole simulated runs through it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fdoverlap_cli.nsys import export as nsys

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
    "localMemoryPerThread INTEGER NOT NULL, localMemoryTotal INTEGER NOT NULL, gridId INTEGER NOT NULL, "
    "graphNodeId INTEGER",
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
    "staticSharedMemory, dynamicSharedMemory, localMemoryPerThread, localMemoryTotal, gridId, graphNodeId) "
    "VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?, 32, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0, 0, ?)",
    nsys.MEMCPY: "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, streamId, correlationId, "
    "globalPid, bytes, copyKind, srcKind, dstKind) VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?, ?, ?)",
    nsys.GRAPH_TRACE: "INSERT INTO CUPTI_ACTIVITY_KIND_GRAPH_TRACE (start, end, deviceId, contextId, streamId, "
    "correlationId, globalPid, graphId, graphExecId) VALUES (?, ?, 0, 1, ?, ?, ?, ?, ?)",
}
# Created on first use, as nsys creates it only for graphs traced as a whole (--cuda-graph-trace=graph).
_GRAPH_TRACE_COLUMNS = (
    "start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, "
    "greenContextId INTEGER, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER, "
    "graphId INTEGER NOT NULL, graphExecId INTEGER"
)

PID = 4242
GLOBAL_PID = (1 << 48) | (PID << 24)  # nsys's GlobalId layout: the pid above the low 24 bits of the tid


def global_pid(pid: int = PID) -> int:
    return (1 << 48) | (pid << 24)


def global_tid(tid: int, pid: int = PID) -> int:
    return global_pid(pid) | tid


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
        self._graph_table = False
        self.first_ns: int | None = None
        self.last_ns = 0
        self.pid = PID  # the process the rows written next belong to (`process()`)

    def process(self, pid: int) -> None:
        """Write the rows that follow as process `pid`'s (a thread id `tid` is then that process's thread)."""
        self.pid = pid

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
                (
                    0,
                    None,
                    nsys.NVTX_DOMAIN_CREATE,
                    None,
                    name,
                    global_tid(tid, self.pid),
                    None,
                    self._domains[name],
                    None,
                ),
            )
        return self._domains[name]

    def category(self, domain: int, category: int, name: str, tid: int = PID) -> None:
        """Name a category of `domain` (an nvtxDomainNameCategory event)."""
        self._add(
            nsys.NVTX, (0, None, nsys.NVTX_CATEGORY, category, name, global_tid(tid, self.pid), None, domain, None)
        )

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
            nsys.NVTX,
            (start, end, nsys.NVTX_PUSH_POP, category, text, global_tid(tid, self.pid), text_id, domain, payload),
        )
        self._seen(start, end)

    def call(self, start: int, end: int, name: str, *, tid: int = PID) -> int:
        """A CUDA API call (`name` as nsys spells it, e.g. cudaLaunchKernel_v7000); returns its correlation id."""
        self._correlation += 1
        self._add(nsys.RUNTIME, (start, end, global_tid(tid, self.pid), self._correlation, self.string(name)))
        self._seen(start, end)
        return self._correlation

    def kernel(
        self, start: int, end: int, name: str, *, stream: int, correlation_id: int, graph_node: int | None = None
    ) -> None:
        """A kernel; `graph_node`: the node of a CUDA graph it ran in (a graph traced per node)."""
        name_id = self.string(name)
        self._add(nsys.KERNEL, (start, end, stream, correlation_id, global_pid(self.pid), name_id, name_id, graph_node))
        self._seen(start, end)

    def graph_trace(self, start: int, end: int, *, stream: int, correlation_id: int, graph_id: int = 1) -> None:
        """One graph launch traced as a whole (a GRAPH_TRACE row; the table is made on first use)."""
        if not self._graph_table:
            self._db.execute(f"CREATE TABLE {nsys.GRAPH_TRACE} ({_GRAPH_TRACE_COLUMNS})")
            self._graph_table = True
        self._add(nsys.GRAPH_TRACE, (start, end, stream, correlation_id, global_pid(self.pid), graph_id, graph_id))
        self._seen(start, end)

    def memcpy(
        self, start: int, end: int, *, stream: int, correlation_id: int, kind: int, src: int, dst: int, nbytes: int
    ) -> None:
        self._add(nsys.MEMCPY, (start, end, stream, correlation_id, global_pid(self.pid), nbytes, kind, src, dst))
        self._seen(start, end)

    def close(self) -> None:
        """Write the buffered rows and the profiled window, and close the file."""
        for table, rows in self._rows.items():
            if rows:
                self._db.executemany(_INSERT[table], rows)
            rows.clear()
        first = self.first_ns or 0
        self._db.execute(
            f"INSERT INTO {nsys.ANALYSIS} (globalVid, duration, startTime, stopTime) VALUES (?, ?, ?, ?)",
            (1 << 48, self.last_ns - first, first, self.last_ns),
        )
        self._db.commit()
        self._db.close()
