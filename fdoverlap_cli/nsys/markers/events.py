"""The occurrences of a step marker in an export (SQL reading only): copies, kernels, host
synchronisations or NVTX ranges of the process that has the most of them, as numpy arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.export import int64_rows
from fdoverlap_cli.nsys.markers.rows import CHUNK, PID_MASK, ExportIndex, arrays, not_in, sql_ids
from fdoverlap_cli.nsys.markers.spec import (
    DEFAULT_DOMAIN,
    CopyMarker,
    KernelMarker,
    NvtxMarker,
    StepSpec,
    SyncMarker,
)

SYNCHRONIZATION = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
CUDA_EVENT = "CUPTI_ACTIVITY_KIND_CUDA_EVENT"
_EVENT_SYNC_TYPE = 1  # ENUM_CUPTI_SYNC_TYPE: CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_EVENT_SYNCHRONIZE


@dataclass(frozen=True)
class MarkerEvents:
    """The occurrences of one marker in one process, in correlation order.

    corr: the correlation id up to which GPU work and API calls belong to the step the event ends
    (a copy's or kernel's own, the event record a sync waited for, the last call before a range ended);
    time_ns: when it happened (a copy's or kernel's GPU end, a sync's return, a range's end);
    host_ns: the host's time of it where known without the call table (a sync's return, a range's end),
    else -1 (filled in from the marker's call). `opening`: for NVTX ranges, (the correlation id before the
    first range began, its start), so that the first range is a whole step.
    """

    pid: int
    corr: np.ndarray
    time_ns: np.ndarray
    host_ns: np.ndarray
    opening: tuple[int, int] | None = None
    note: str | None = None

    def __len__(self) -> int:
        return len(self.corr)


def _busiest_pid(pids: np.ndarray) -> int | None:
    if len(pids) == 0:
        return None
    values, counts = np.unique(pids, return_counts=True)
    return int(values[np.argmax(counts)])


def _events(pid_of: np.ndarray, corr: np.ndarray, time_ns: np.ndarray, host_ns: np.ndarray, **kw) -> MarkerEvents:
    """The events of the process with the most of them, sorted by correlation id."""
    pid = _busiest_pid(pid_of)
    if pid is None:
        return MarkerEvents(0, *(np.empty(0, np.int64) for _ in range(3)), **kw)
    mine = pid_of == pid
    order = np.argsort(corr[mine], kind="stable")
    return MarkerEvents(pid, corr[mine][order], time_ns[mine][order], host_ns[mine][order], **kw)


def copy_events(export: nsys.NsysExport, index: ExportIndex, spec: CopyMarker) -> MarkerEvents:
    if nsys.MEMCPY not in index.tables:
        return _events(*(np.empty(0, np.int64) for _ in range(4)))
    host_side = "dstKind" if spec.direction == "dtoh" else "srcKind"
    where = [f"copyKind IN ({sql_ids(index.copy_ids(spec.direction))})", "bytes >= ?"]
    params: list[int] = [spec.min_bytes]
    if spec.max_bytes is not None:
        where.append("bytes <= ?")
        params.append(spec.max_bytes)
    if spec.memory is not None:
        where.append(f"{host_side} IN ({sql_ids(index.memory_ids(spec.memory))})")
    sql = (
        f"SELECT COALESCE(globalPid, 0), correlationId, end FROM {nsys.MEMCPY} "
        f"WHERE correlationId IS NOT NULL AND {' AND '.join(where)}"
    )
    rows = arrays(export, sql, tuple(params), 3)
    return _events(rows[:, 0], rows[:, 1], rows[:, 2], np.full(len(rows), -1, np.int64))


def kernel_events(export: nsys.NsysExport, index: ExportIndex, spec: KernelMarker) -> MarkerEvents:
    pattern = re.compile(spec.pattern)
    if nsys.KERNEL not in index.tables:
        return _events(*(np.empty(0, np.int64) for _ in range(4)))
    pairs = export.batches(f"SELECT DISTINCT shortName, demangledName FROM {nsys.KERNEL}")
    ids = {short for rows in pairs for short, demangled in rows if _matches(export, pattern, short, demangled)}
    sql = (
        f"SELECT COALESCE(globalPid, 0), correlationId, end FROM {nsys.KERNEL} "
        f"WHERE correlationId IS NOT NULL AND shortName IN ({sql_ids(ids)})"
    )
    rows = arrays(export, sql, (), 3)
    return _events(rows[:, 0], rows[:, 1], rows[:, 2], np.full(len(rows), -1, np.int64))


def _matches(export: nsys.NsysExport, pattern: re.Pattern, short: int, demangled: int) -> bool:
    return any(pattern.search(export.string(i) or "") for i in (short, demangled) if i is not None)


def sync_events(export: nsys.NsysExport, index: ExportIndex, spec: SyncMarker) -> MarkerEvents:
    """Synchronisation calls (and pageable device-to-host copies, which block as they are launched)."""
    ids = frozenset().union(*(index.sync_ids[k] for k in spec.kinds))
    calls = arrays(
        export,
        f"SELECT globalTid & {PID_MASK}, correlationId, end, nameId FROM {nsys.RUNTIME} "
        f"WHERE correlationId IS NOT NULL AND nameId IN ({sql_ids(ids)})",
        (),
        4,
    )
    if "memcpy" in spec.kinds and nsys.MEMCPY in index.tables:
        pageable = (
            f"SELECT correlationId FROM {nsys.MEMCPY} WHERE copyKind IN ({sql_ids(index.copy_ids('dtoh'))}) "
            f"AND dstKind IN ({sql_ids(index.memory_ids('pageable'))})"
        )
        blocking = arrays(
            export,
            f"SELECT globalTid & {PID_MASK}, correlationId, end, nameId FROM {nsys.RUNTIME} "
            f"WHERE correlationId IN ({pageable}){not_in('nameId', ids)}",
            (),
            4,
        )
        calls = np.concatenate([calls, blocking])
    refs, note = _waited_records(export, index, calls) if "event" in spec.kinds else (calls[:, 1], None)
    return _events(calls[:, 0], refs, calls[:, 2], calls[:, 2].copy(), note=note)


def _waited_records(export: nsys.NsysExport, index: ExportIndex, calls: np.ndarray) -> tuple[np.ndarray, str | None]:
    """For each event synchronisation, the correlation id of the event record it waited for (the step's work
    is what was launched before that record, not before the wait); other calls keep their own id."""
    refs = calls[:, 1].copy()
    is_event_sync = np.isin(calls[:, 3], list(index.sync_ids["event"]))
    if not is_event_sync.any():
        return refs, None
    if SYNCHRONIZATION not in index.tables or CUDA_EVENT not in index.tables:
        return refs, (
            f"no {SYNCHRONIZATION}/{CUDA_EVENT} table: an event synchronisation ends its step at the wait, "
            "not at the event's record (work launched in between lands in the earlier step)"
        )
    waited = arrays(
        export,
        f"SELECT correlationId, eventId FROM {SYNCHRONIZATION} "
        f"WHERE syncType = {_EVENT_SYNC_TYPE} AND correlationId IS NOT NULL AND eventId IS NOT NULL",
        (),
        2,
    )
    records = arrays(
        export,
        f"SELECT COALESCE(globalPid, 0), eventId, correlationId FROM {CUDA_EVENT} "
        "WHERE correlationId IS NOT NULL AND eventId IS NOT NULL",
        (),
        3,
    )
    syncs = np.flatnonzero(is_event_sync)
    order = np.argsort(waited[:, 0], kind="stable")
    at = np.minimum(np.searchsorted(waited[order, 0], calls[syncs, 1]), max(len(order) - 1, 0))
    known = (waited[order[at], 0] == calls[syncs, 1]) if len(order) else np.zeros(len(syncs), bool)
    syncs, event = syncs[known], waited[order[at[known]], 1]
    record = _latest_before(records[:, :2], records[:, 2], np.column_stack([calls[syncs, 0], event]), calls[syncs, 1])
    refs[syncs[record >= 0]] = record[record >= 0]
    return refs, None


def _latest_before(
    keys: np.ndarray, values: np.ndarray, query_keys: np.ndarray, query_values: np.ndarray
) -> np.ndarray:
    """For each query, the largest value below its own among the rows with the same key ((n, 2) int64 rows),
    or -1 when there is none: one sort of (key rank, value) composites and one search."""
    if len(keys) == 0 or len(query_keys) == 0:
        return np.full(len(query_keys), -1, np.int64)
    _, rank = np.unique(np.concatenate([keys, query_keys]), axis=0, return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    span = int(max(values.max(), query_values.max())) + 1
    ranked = np.sort(rank[: len(keys)] * span + values)
    query_rank = rank[len(keys) :]
    j = np.searchsorted(ranked, query_rank * span + query_values, side="left") - 1
    hit = ranked[np.maximum(j, 0)]
    return np.where((j >= 0) & (hit // span == query_rank), hit % span, -1)


def nvtx_events(export: nsys.NsysExport, index: ExportIndex, spec: NvtxMarker) -> MarkerEvents:
    """Closed ranges named spec.name (message, or category name) on the thread with the most of them."""
    if nsys.NVTX not in index.tables:
        return _events(*(np.empty(0, np.int64) for _ in range(4)))
    domains = {0: DEFAULT_DOMAIN, **export.domains()}
    wanted = {d for d, name in domains.items() if spec.domain is None or name == spec.domain}
    categories = {(d, c) for (d, c), name in export.categories().items() if name == spec.name and d in wanted}
    sql = (
        f"SELECT e.start, e.end, e.globalTid, COALESCE(e.domainId, 0), COALESCE(e.category, -1), "
        f"COALESCE(e.text, s.value) FROM {nsys.NVTX} e LEFT JOIN {nsys.STRINGS} s ON s.id = e.textId "
        f"WHERE e.eventType IN ({nsys.NVTX_PUSH_POP}, {nsys.NVTX_START_END}) AND e.end IS NOT NULL "
        f"AND COALESCE(e.domainId, 0) IN ({sql_ids(wanted)}) "
        "AND (COALESCE(e.text, s.value) = ? OR e.category IS NOT NULL)"
    )
    found = [
        (start, end, tid)
        for rows in export.batches(sql, (spec.name,))
        for start, end, tid, domain, category, text in rows
        if text == spec.name or (text is None and (domain, category) in categories)
    ]
    ranges = np.array(found, dtype=np.int64).reshape(-1, 3)
    if len(ranges) == 0:
        return _events(*(np.empty(0, np.int64) for _ in range(4)))
    tids, counts = np.unique(ranges[:, 2], return_counts=True)
    tid = int(tids[np.argmax(counts)])
    ranges = ranges[ranges[:, 2] == tid]
    ranges = ranges[np.argsort(ranges[:, 1], kind="stable")]
    pid = tid & PID_MASK
    before = _last_call_before(export, pid, np.concatenate([ranges[:1, 0], ranges[:, 1]]))
    corr, keep = np.unique(before[1:], return_index=True)  # nested or empty ranges share a boundary
    ends = ranges[keep, 1]
    return MarkerEvents(pid, corr, ends, ends.copy(), opening=(int(before[0]), int(ranges[0, 0])))


def _last_call_before(export: nsys.NsysExport, pid: int, times: np.ndarray) -> np.ndarray:
    """For each time (any order), the largest correlation id of the process's API calls that started before it
    (-1 when none): one pass over the call table in any row order."""
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    slot_max = np.full(len(times) + 1, -1, dtype=np.int64)
    sql = (
        f"SELECT start, correlationId FROM {nsys.RUNTIME} "
        "WHERE globalTid >= ? AND globalTid < ? AND correlationId IS NOT NULL"
    )
    for rows in export.batches(sql, (pid, pid + (1 << nsys.TID_BITS)), CHUNK):
        a = int64_rows(rows)
        np.maximum.at(slot_max, np.searchsorted(sorted_times, a[:, 0], side="right"), a[:, 1])
    out = np.empty(len(times), dtype=np.int64)
    out[order] = np.maximum.accumulate(slot_max)[: len(times)]
    return out


def of_spec(export: nsys.NsysExport, index: ExportIndex, spec: StepSpec) -> MarkerEvents:
    """The occurrences of `spec` in the export."""
    if isinstance(spec, CopyMarker):
        return copy_events(export, index, spec)
    if isinstance(spec, SyncMarker):
        return sync_events(export, index, spec)
    if isinstance(spec, KernelMarker):
        return kernel_events(export, index, spec)
    return nvtx_events(export, index, spec)
