"""SQL reading for step detection without NVTX: the export's name tables and its record streams.

Everything here (and in `events`, the marker occurrences) turns rows into numpy arrays and nothing
more; what they mean for steps is `candidates` and `per_step`'s business. The record streams
(kernels, copies, memsets, API calls of one process) come in chunks of `CHUNK` rows, so memory
follows the chunk and the steps, not the export. Rows are attributed to steps by their CUDA
correlation id, which increases with the API call order within a process: the GPU record of a
launch carries the id of the call that launched it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.calls import api_name, is_host_wait_call, is_timing_kernel
from fdoverlap_cli.nsys.export import int64_rows

CHUNK = 65536
MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
GRAPH_TRACE = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"  # whole-graph executions (--cuda-graph-trace=graph)
PID_MASK = ~((1 << nsys.TID_BITS) - 1)

# Kernels that look like a sampler's: their count is what a step count should be near.
SAMPLER_LIKE = re.compile(r"(?i)sampl|argmax|arg_max|topk|top_k|top_p|multinomial")
GRAPH_LAUNCH_CALLS = frozenset({"cudaGraphLaunch", "cuGraphLaunch"})
_LAUNCH_CALL = re.compile(r"^(cuda|cu)(Launch|GraphLaunch|Memcpy\w*Async|Memset\w*Async|MemcpyPeerAsync)")
SYNC_CALLS = {
    "event": frozenset({"cudaEventSynchronize", "cuEventSynchronize"}),
    "stream": frozenset({"cudaStreamSynchronize", "cuStreamSynchronize"}),
    "device": frozenset({"cudaDeviceSynchronize", "cudaThreadSynchronize", "cuCtxSynchronize"}),
}
# ENUM_CUDA_MEMCPY_OPER / ENUM_CUDA_MEM_KIND as nsys numbers them, for exports without the enum tables.
_COPY_KIND_DEFAULT = {1: "CUDA_MEMCPY_KIND_HTOD", 2: "CUDA_MEMCPY_KIND_DTOH", 8: "CUDA_MEMCPY_KIND_DTOD"}
_MEMORY_DEFAULT = {0: "MEMORY_KIND_PAGEABLE", 1: "MEMORY_KIND_PINNED", 2: "MEMORY_KIND_DEVICE"}


def _ids(values: dict[int, str], keep) -> frozenset[int]:
    return frozenset(i for i, v in values.items() if keep(v))


def sql_ids(ids: frozenset[int] | set[int]) -> str:
    """A SQL list of integer ids for IN (...) (NULL for none, which matches nothing)."""
    return ", ".join(str(int(i)) for i in sorted(ids)) or "NULL"


def not_in(column: str, ids: frozenset[int]) -> str:
    """` AND column NOT IN (...)`, or nothing for no ids (NOT IN (NULL) would match nothing)."""
    return f" AND {column} NOT IN ({sql_ids(ids)})" if ids else ""


@dataclass(frozen=True)
class ExportIndex:
    """The export's small tables, read once: API and kernel names by id, copy and memory kinds."""

    kernels: dict[int, str]  # KERNEL shortName id -> name
    launch_ids: frozenset[int]
    graph_launch_ids: frozenset[int]
    wait_ids: frozenset[int]  # every host-blocking call (synchronize, blocking copies)
    sync_ids: dict[str, frozenset[int]]  # sync kind -> call ids (event, stream, device, memcpy)
    instrumentation_ids: frozenset[int]  # the tool's own timing kernels: counted apart
    sampler_ids: frozenset[int]  # short or demangled name ids of sampler-like kernels
    copy_kind: dict[int, str]  # copyKind -> dtoh, htod, dtod, other
    memory: dict[int, str]  # srcKind/dstKind -> pinned, pageable, device, other
    tables: frozenset[str]

    @classmethod
    def read(cls, export: nsys.NsysExport) -> ExportIndex:
        api = {i: api_name(n) for i, n in export.distinct_names(nsys.RUNTIME, "nameId").items()}
        kernels = export.distinct_names(nsys.KERNEL, "shortName")
        demangled = export.distinct_names(nsys.KERNEL, "demangledName") if nsys.KERNEL in export.tables else {}
        copy_names = export.enum(nsys.MEMCPY_KINDS) or _COPY_KIND_DEFAULT
        memory_names = export.enum(nsys.MEMORY_KINDS) or _MEMORY_DEFAULT
        sync_ids = {kind: _ids(api, names.__contains__) for kind, names in SYNC_CALLS.items()}
        sync_ids["memcpy"] = _ids(api, lambda n: n.startswith(("cudaMemcpy", "cuMemcpy")) and "Async" not in n)
        return cls(
            kernels=kernels,
            launch_ids=_ids(api, lambda n: bool(_LAUNCH_CALL.match(n))),
            graph_launch_ids=_ids(api, GRAPH_LAUNCH_CALLS.__contains__),
            wait_ids=_ids(api, is_host_wait_call),
            sync_ids=sync_ids,
            instrumentation_ids=_ids(kernels, is_timing_kernel),
            sampler_ids=_ids(kernels, SAMPLER_LIKE.search) | _ids(demangled, SAMPLER_LIKE.search),
            copy_kind={i: _copy_label(n) for i, n in copy_names.items()},
            memory={i: _memory_label(n) for i, n in memory_names.items()},
            tables=export.tables,
        )

    def copy_ids(self, label: str) -> frozenset[int]:
        return _ids(self.copy_kind, label.__eq__)

    def memory_ids(self, label: str) -> frozenset[int]:
        return _ids(self.memory, label.__eq__)


def _copy_label(name: str) -> str:
    for label in ("DTOH", "HTOD", "DTOD"):
        if name.endswith("_" + label) and "UVM" not in name:
            return label.lower()
    return "other"


def _memory_label(name: str) -> str:
    for label in ("PAGEABLE", "PINNED", "DEVICE"):
        if name.endswith("_" + label):
            return label.lower()
    return "other"


def arrays(export: nsys.NsysExport, sql: str, params: tuple = (), columns: int | None = None) -> np.ndarray:
    """All rows of a small query as one int64 array (n, columns); NULLs must be COALESCEd away in the SQL."""
    parts = [int64_rows(rows) for rows in export.batches(sql, params)]
    if not parts:
        return np.empty((0, columns or 0), dtype=np.int64)
    return np.concatenate(parts)


# --------------------------------------------------------------------------- whole-process streams, in chunks


def _pid_filter(table: str, export: nsys.NsysExport) -> str:
    return "(globalPid = ? OR globalPid IS NULL)" if "globalPid" in export.columns(table) else "(? IS NOT NULL)"


def kernel_correlations(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """Correlation ids of the process's kernels and graph executions (not the tool's timing kernels), any order."""
    parts = []
    if nsys.KERNEL in index.tables:
        parts.append(
            f"SELECT correlationId FROM {nsys.KERNEL} WHERE {_pid_filter(nsys.KERNEL, export)} "
            f"AND correlationId IS NOT NULL{not_in('shortName', index.instrumentation_ids)}"
        )
    if GRAPH_TRACE in index.tables:
        parts.append(
            f"SELECT correlationId FROM {GRAPH_TRACE} WHERE {_pid_filter(GRAPH_TRACE, export)} "
            "AND correlationId IS NOT NULL"
        )
    for sql in parts:
        for rows in export.batches(sql, (pid,), CHUNK):
            yield int64_rows(rows).reshape(-1)


def kernels(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """(start, end, corr, shortName id, graph: 0 plain / 1 a graph node / 2 a whole-graph execution) of the
    process's kernels and graph executions, by start time."""
    parts = []
    if nsys.KERNEL in index.tables:
        node = "graphNodeId IS NOT NULL" if "graphNodeId" in export.columns(nsys.KERNEL) else "0"
        parts.append(
            f"SELECT start, end, correlationId, shortName, {node} FROM {nsys.KERNEL} "
            f"WHERE {_pid_filter(nsys.KERNEL, export)} AND correlationId IS NOT NULL"
        )
    if GRAPH_TRACE in index.tables:
        parts.append(
            f"SELECT start, end, correlationId, -1, 2 FROM {GRAPH_TRACE} "
            f"WHERE {_pid_filter(GRAPH_TRACE, export)} AND correlationId IS NOT NULL"
        )
    if not parts:
        return
    sql = " UNION ALL ".join(parts) + " ORDER BY 1"
    for rows in export.batches(sql, (pid,) * len(parts), CHUNK):
        yield int64_rows(rows)


MINE = 4  # in every_kernel's flags: the row is one of the process's, with a correlation id


def every_kernel(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """`kernels`' rows of every process, by start time, for a pass that also feeds the export's summary:
    (start, end, corr or -1, shortName id, flags = graph + MINE when the row is one of `kernels`' rows)."""
    parts = []
    if nsys.KERNEL in index.tables:
        node = "graphNodeId IS NOT NULL" if "graphNodeId" in export.columns(nsys.KERNEL) else "0"
        mine = f"(correlationId IS NOT NULL AND {_pid_filter(nsys.KERNEL, export)})"
        parts.append(
            f"SELECT start, end, COALESCE(correlationId, -1), shortName, ({node}) + {MINE} * {mine} FROM {nsys.KERNEL}"
        )
    if GRAPH_TRACE in index.tables:
        mine = f"(correlationId IS NOT NULL AND {_pid_filter(GRAPH_TRACE, export)})"
        parts.append(f"SELECT start, end, COALESCE(correlationId, -1), -1, 2 + {MINE} * {mine} FROM {GRAPH_TRACE}")
    if not parts:
        return
    sql = " UNION ALL ".join(parts) + " ORDER BY 1"
    for rows in export.batches(sql, (pid,) * len(parts), CHUNK):
        yield int64_rows(rows)


def _process_rows(export: nsys.NsysExport, table: str, columns: str, pid: int) -> Iterator[np.ndarray]:
    """`columns` of the process's rows of `table` that have a correlation id, in int64 chunks, any order."""
    if table not in export.tables:
        return
    sql = f"SELECT {columns} FROM {table} WHERE {_pid_filter(table, export)} AND correlationId IS NOT NULL"
    for rows in export.batches(sql, (pid,), CHUNK):
        yield int64_rows(rows)


def copies(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """(start, end, corr, copyKind, srcKind, dstKind, bytes) of the process's copies (-1 for NULL)."""
    columns = "start, end, correlationId, copyKind, COALESCE(srcKind, -1), COALESCE(dstKind, -1), bytes"
    return _process_rows(export, nsys.MEMCPY, columns, pid)


def memsets(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """(start, end, corr) of the process's memsets."""
    return _process_rows(export, MEMSET, "start, end, correlationId", pid)


def calls(export: nsys.NsysExport, index: ExportIndex, pid: int) -> Iterator[np.ndarray]:
    """(start, end, corr, nameId) of the process's CUDA API calls (every thread), any order."""
    if nsys.RUNTIME not in index.tables:
        return
    sql = (
        f"SELECT start, end, correlationId, nameId FROM {nsys.RUNTIME} "
        "WHERE globalTid >= ? AND globalTid < ? AND correlationId IS NOT NULL"
    )
    for rows in export.batches(sql, (pid, pid + (1 << nsys.TID_BITS)), CHUNK):
        yield int64_rows(rows)


def sampler_like_count(export: nsys.NsysExport, index: ExportIndex, pid: int) -> int:
    """How many of the process's kernels look like a sampler's (by short or demangled name)."""
    if nsys.KERNEL not in index.tables or not index.sampler_ids:
        return 0
    ids = sql_ids(index.sampler_ids)
    sql = (
        f"SELECT count(*) FROM {nsys.KERNEL} WHERE {_pid_filter(nsys.KERNEL, export)} "
        f"AND (shortName IN ({ids}) OR demangledName IN ({ids}))"
    )
    rows = next(export.batches(sql, (pid,)), [(0,)])
    return int(rows[0][0] or 0)
