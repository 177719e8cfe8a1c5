"""What any Nsight Systems export holds, summed: NVTX ranges, memory copies, kernels, and how busy the GPU was.

Plain data for `analyze` to report whatever program the export profiled (render/nsys_tables.py shows it).
Ranges, kernels and copies carry `nsys stats`'s statistics (its nvtx_sum, cuda_gpu_kern_sum,
cuda_gpu_mem_time_sum and cuda_gpu_mem_size_sum reports): total, instances, mean, median, min, max and
the sample standard deviation. Pageable device-to-host copies are flagged: CUDA completes them before
returning, so they serialize the host with the GPU and cannot overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys import statistics
from fdoverlap_cli.nsys.calls import is_timing_kernel

TOP_KERNELS = 10
DESTINATIONS = ("pinned", "pageable", "device")  # always reported, zero when absent
COPY_KINDS = ("htod", "dtoh", "dtod")


def _enum_label(name: str | None, ident: int | None) -> str:
    """CUDA_MEMCPY_KIND_DTOH -> dtoh, CUDA_MEMOPR_MEMORY_KIND_DEVICE_STATIC -> device_static."""
    if name is None:
        return "unknown" if ident is None else f"kind {ident}"
    return name.split("_KIND_", 1)[-1].lower()


@dataclass(frozen=True)
class Stats:
    """count, total, mean, median, min, max and sample standard deviation (n - 1; 0 for one value)."""

    count: int
    total: int
    mean: float
    median: float
    min: int
    max: int
    stddev: float

    @classmethod
    def of(cls, values: Iterable[int] | np.ndarray) -> Stats:
        v = values.astype(np.int64) if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.int64)
        if not len(v):
            return cls(0, 0, 0.0, 0.0, 0, 0, 0.0)
        stddev = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        return cls(len(v), int(v.sum()), float(v.mean()), float(np.median(v)), int(v.min()), int(v.max()), stddev)

    def to_dict(self, unit: str) -> dict[str, Any]:
        """{'total_ns': ..., 'mean_ns': ...} for unit 'ns' (count without a unit)."""
        fields = ("total", "mean", "median", "min", "max", "stddev")
        return {"count": self.count, **{f"{f}_{unit}": getattr(self, f) for f in fields}}


@dataclass(frozen=True)
class RangeSummary:
    domain: str
    name: str
    time: Stats  # of the ranges' durations, ns

    @property
    def count(self) -> int:
        return self.time.count

    @property
    def total_ns(self) -> int:
        return self.time.total

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "name": self.name, **self.time.to_dict("ns")}


@dataclass(frozen=True)
class CopyRow:
    kind: str  # htod, dtoh, dtod, ...
    source: str  # pinned, pageable, device, ...
    destination: str
    count: int
    bytes: int
    total_ns: int


@dataclass(frozen=True)
class CopyKind:
    """The copies of one kind (nsys stats' "operation"): their durations (ns) and sizes (bytes)."""

    kind: str
    time: Stats
    size: Stats

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time.to_dict("ns"), "size": self.size.to_dict("bytes")}


@dataclass(frozen=True)
class CopySummary:
    rows: tuple[CopyRow, ...]
    kinds: tuple[CopyKind, ...] = ()  # the longest total time first

    def by_kind(self) -> dict[str, int]:
        out = dict.fromkeys(COPY_KINDS, 0)
        for r in self.rows:
            out[r.kind] = out.get(r.kind, 0) + r.count
        return out

    def by_destination(self) -> dict[str, int]:
        out = dict.fromkeys(DESTINATIONS, 0)
        for r in self.rows:
            out[r.destination] = out.get(r.destination, 0) + r.count
        return out

    def pageable_dtoh(self) -> dict[str, int]:
        rows = [r for r in self.rows if r.kind == "dtoh" and r.destination == "pageable"]
        return {
            "count": sum(r.count for r in rows),
            "bytes": sum(r.bytes for r in rows),
            "total_ns": sum(r.total_ns for r in rows),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_kind": self.by_kind(),
            "by_destination": self.by_destination(),
            "pageable_dtoh": self.pageable_dtoh(),
            "details": [r.__dict__ for r in self.rows],
            "operations": [k.to_dict() for k in self.kinds],
        }


@dataclass(frozen=True)
class KernelSummary:
    count: int
    total_ns: int
    instrumentation: int  # the engine's timing kernels among them
    top: tuple[tuple[str, Stats], ...]  # (name, durations in ns), the longest total first

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_ns": self.total_ns,
            "instrumentation_kernels": self.instrumentation,
            "top": [{"name": n, **t.to_dict("ns")} for n, t in self.top],
        }


@dataclass(frozen=True)
class GpuBusy:
    """busy = |∪ kernels ∪ copies| / window; the window is the profiled session when the export records it."""

    busy_ns: int
    window_ns: int
    window: str  # "profiled session" or "first to last GPU record"
    active_ns: int  # first GPU record's start to the last one's end

    @property
    def busy(self) -> float | None:
        return self.busy_ns / self.window_ns if self.window_ns else None

    @property
    def busy_while_active(self) -> float | None:
        return self.busy_ns / self.active_ns if self.active_ns else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "busy": self.busy, "busy_while_active": self.busy_while_active}


def ranges(export: nsys.NsysExport) -> list[RangeSummary]:
    """Closed ranges by (domain, name), the longest total first; a range with no message is named by its category."""
    domains, categories = export.domains(), export.categories()
    durations: dict[tuple[str, str], list[int]] = {}
    for domain, category, text, duration in statistics.range_durations(export):
        name = text if text is not None else categories.get((domain, category or 0), "(unnamed)")
        key = (domains.get(domain, "(default)" if domain == 0 else f"domain {domain}"), name)
        durations.setdefault(key, []).append(duration)
    rows = [RangeSummary(d, n, Stats.of(v)) for (d, n), v in durations.items()]
    return sorted(rows, key=lambda r: (-r.total_ns, r.domain, r.name))


def copies(export: nsys.NsysExport, notes: list[str]) -> CopySummary:
    kinds, memory = export.enum(nsys.MEMCPY_KINDS), export.enum(nsys.MEMORY_KINDS)
    if nsys.MEMCPY in export.tables and not (kinds and memory):
        notes.append(f"the export has no {nsys.MEMCPY_KINDS}/{nsys.MEMORY_KINDS} table: copy kinds shown by number")
    rows = tuple(
        CopyRow(
            _enum_label(kinds.get(t.copy_kind), t.copy_kind),
            _enum_label(memory.get(t.src_kind), t.src_kind),
            _enum_label(memory.get(t.dst_kind), t.dst_kind),
            t.count,
            t.bytes or 0,
            t.total_ns or 0,
        )
        for t in statistics.copy_totals(export)
    )
    times: dict[int, list[np.ndarray]] = {}
    sizes: dict[int, list[np.ndarray]] = {}
    for batch in statistics.copy_records(export):
        a = nsys.int64_rows(batch)
        for kind in np.unique(a[:, 0]).tolist():
            mine = a[:, 0] == kind
            times.setdefault(kind, []).append(a[mine, 1])
            sizes.setdefault(kind, []).append(a[mine, 2])
    by_label: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for kind in times:
        label = _enum_label(kinds.get(kind), None if kind == -1 else kind)
        t, z = by_label.setdefault(label, ([], []))
        t += times[kind]
        z += sizes[kind]
    by_kind = [CopyKind(k, Stats.of(np.concatenate(t)), Stats.of(np.concatenate(z))) for k, (t, z) in by_label.items()]
    return CopySummary(rows, tuple(sorted(by_kind, key=lambda k: (-k.time.total, k.kind))))


class GpuRecords:
    """The kernel statistics and the GPU busy of `kernels` and `gpu_busy`, fed one chunk at a time with the
    export's kernels and whole-graph records (every process, by start time), so that a reader that passes over
    them anyway (the steps found without NVTX) feeds the summary too and the kernels are read once; the
    memory copies are merged in by start time from a cursor of their own. Memory: one chunk and the top
    names' durations (int32 where they fit), until `close` turns them into statistics."""

    def __init__(self, export: nsys.NsysExport) -> None:
        self.names = export.distinct_names(nsys.KERNEL, "shortName")
        self.count = self.total = self.instrumentation = 0
        self.top_ids: list[int] = []
        for t in statistics.kernel_totals(export):
            name = self.names.get(t.name_id, f"<string {t.name_id}>")
            self.count += t.count
            self.total += t.total_ns or 0
            self.instrumentation += t.count if is_timing_kernel(name) else 0
            if len(self.top_ids) < TOP_KERNELS:
                self.top_ids.append(t.name_id)
        self._top = np.array(self.top_ids, np.int64)
        self._durations: dict[int, list[np.ndarray]] = {i: [] for i in self.top_ids}
        self._copies = statistics.copy_intervals(export)
        self._pending = np.empty((0, 2), np.int64)  # copies read but not yet merged
        self.busy = 0
        self.first: int | None = None
        self.latest: int | None = None
        self.summary: KernelSummary | None = None  # set by close

    def add(self, start: np.ndarray, end: np.ndarray, name: np.ndarray) -> None:
        """Kernels (shortName id; -1 for a whole-graph record), sorted by start, after every earlier chunk's."""
        if not len(start):
            return
        top = np.isin(name, self._top)
        if top.any():
            for i in np.unique(name[top]).tolist():
                mine = name == i
                ns = end[mine] - start[mine]  # >= 0: the export was refused otherwise
                self._durations[i].append(ns.astype(np.int32) if ns.max() < 2**31 else ns)
        copies = self._copies_until(int(start[-1]))
        if len(copies):
            start = np.concatenate([start, copies[:, 0]])
            end = np.concatenate([end, copies[:, 1]])
            order = np.argsort(start, kind="stable")
            start, end = start[order], end[order]
        self._union(start, end)

    def _copies_until(self, last: int) -> np.ndarray:
        """The copies not merged yet that start at or before `last`."""
        parts = [self._pending]
        while self._copies is not None and (not len(parts[-1]) or parts[-1][-1, 0] <= last):
            batch = next(self._copies, None)
            if batch is None:
                self._copies = None
                break
            parts.append(nsys.int64_rows(batch))
        pending = np.concatenate(parts) if len(parts) > 1 else parts[0]
        cut = int(np.searchsorted(pending[:, 0], last, side="right"))
        self._pending = pending[cut:]
        return pending[:cut]

    def _union(self, start: np.ndarray, end: np.ndarray) -> None:
        """|∪ intervals| a chunk at a time: each record adds what of it lies past the latest end before it (a
        running maximum carried across chunks)."""
        if not len(start):
            return
        running = np.maximum.accumulate(end)
        before = np.empty_like(running)
        before[0] = start[0] if self.latest is None else self.latest
        before[1:] = running[:-1]
        self.busy += int(np.clip(end - np.maximum(start, before), 0, None).sum())
        self.first = int(start[0]) if self.first is None else self.first
        self.latest = int(running[-1]) if self.latest is None else max(self.latest, int(running[-1]))

    def feed(self, export: nsys.NsysExport) -> None:
        """Read the kernels and whole-graph records here (when no other reader fed them)."""
        for batch in statistics.kernel_records(export):
            a = nsys.int64_rows(batch)
            self.add(a[:, 0], a[:, 1], a[:, 2])
        self.close()

    def close(self) -> None:
        """After the last record: the rest of the copies merged, the durations turned into statistics."""
        rest = self._copies_until(np.iinfo(np.int64).max)
        self._union(rest[:, 0], rest[:, 1])
        top = []
        for i in self.top_ids:
            durations = self._durations.pop(i)
            top.append(
                (self.names.get(i, f"<string {i}>"), Stats.of(np.concatenate(durations) if durations else np.empty(0)))
            )
        self.summary = KernelSummary(self.count, self.total, self.instrumentation, tuple(top))

    def kernels(self) -> KernelSummary:
        """The kernel summary (after `close`)."""
        assert self.summary is not None, "GpuRecords.kernels before close"
        return self.summary

    def gpu_busy(self, export: nsys.NsysExport) -> GpuBusy:
        """|∪ kernels ∪ copies| over the window (after `close`)."""
        if self.latest is None or self.first is None:
            return GpuBusy(0, 0, "no GPU records", 0)
        first, last = self.first, self.latest
        profiled = export.profiled_window()
        if profiled is not None and profiled[1] > profiled[0]:
            return GpuBusy(self.busy, profiled[1] - profiled[0], "profiled session", last - first)
        return GpuBusy(self.busy, last - first, "first to last GPU record", last - first)


def table_notes(export: nsys.NsysExport) -> list[str]:
    """What a missing table means for the analysis; no NVTX and no CUDA at all is nothing to analyze."""
    tables, notes = export.tables, []
    has_nvtx, has_cuda = nsys.NVTX in tables, nsys.RUNTIME in tables
    if not has_nvtx and not has_cuda:
        raise InputError(
            str(export.path),
            f"nothing to analyze: no {nsys.NVTX} and no CUPTI tables (profile with `nsys profile -t cuda,nvtx`)",
        )
    if not has_nvtx:
        notes.append(
            f"no {nsys.NVTX} table: the program emitted no NVTX range (or nsys ran without -t nvtx), so steps "
            "can come only from CUDA activity"
        )
    if not has_cuda:
        notes.append(
            f"no {nsys.RUNTIME} table: the report was taken without CUDA tracing (-t cuda), "
            "so there are no kernels, copies or API calls to measure"
        )
    else:
        for table, what in ((nsys.KERNEL, "kernels"), (nsys.MEMCPY, "memory copies")):
            if table not in tables:
                notes.append(f"no {table} table: no {what} were recorded")
    return notes
