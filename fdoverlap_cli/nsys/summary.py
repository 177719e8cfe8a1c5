"""What any Nsight Systems export holds, summed: NVTX ranges, memory copies, kernels, and how busy the GPU was.

Plain data for `analyze` to report whatever program the export profiled (render/nsys_tables.py shows it).
Pageable device-to-host copies are flagged: CUDA completes them before returning, so they serialize
the host with the GPU and cannot overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.nsys import export as nsys
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
class RangeSummary:
    domain: str
    name: str
    count: int
    total_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mean_ns": self.total_ns / self.count if self.count else None}


@dataclass(frozen=True)
class CopyRow:
    kind: str  # htod, dtoh, dtod, ...
    source: str  # pinned, pageable, device, ...
    destination: str
    count: int
    bytes: int
    total_ns: int


@dataclass(frozen=True)
class CopySummary:
    rows: tuple[CopyRow, ...]

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
        }


@dataclass(frozen=True)
class KernelSummary:
    count: int
    total_ns: int
    instrumentation: int  # the engine's timing kernels among them
    top: tuple[tuple[str, int, int], ...]  # (name, count, total_ns), the longest total first

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_ns": self.total_ns,
            "instrumentation_kernels": self.instrumentation,
            "top": [{"name": n, "count": c, "total_ns": t} for n, c, t in self.top],
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
    totals: dict[tuple[str, str], list[int]] = {}
    for t in export.range_totals():
        name = t.name if t.name is not None else categories.get((t.domain, t.category or 0), "(unnamed)")
        key = (domains.get(t.domain, "(default)" if t.domain == 0 else f"domain {t.domain}"), name)
        acc = totals.setdefault(key, [0, 0])
        acc[0] += t.count
        acc[1] += t.total_ns or 0
    rows = [RangeSummary(d, n, c, t) for (d, n), (c, t) in totals.items()]
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
        for t in export.copy_totals()
    )
    return CopySummary(rows)


def kernels(export: nsys.NsysExport) -> KernelSummary:
    names = export.distinct_names(nsys.KERNEL, "shortName")
    count = total = instrumentation = 0
    top = []
    for t in export.kernel_totals():
        name = names.get(t.name_id, f"<string {t.name_id}>")
        count += t.count
        total += t.total_ns or 0
        instrumentation += t.count if is_timing_kernel(name) else 0
        if len(top) < TOP_KERNELS:
            top.append((name, t.count, t.total_ns or 0))
    return KernelSummary(count, total, instrumentation, tuple(top))


def gpu_busy(export: nsys.NsysExport) -> GpuBusy:
    """|∪ kernels ∪ copies| in one pass over the records by start time (merging as they come)."""
    busy = 0
    first = run_start = run_end = None
    for start, end in export.gpu_intervals():
        if run_end is None or start > run_end:
            if run_end is not None:
                busy += run_end - run_start
            run_start, run_end = start, end
            first = start if first is None else first
        elif end > run_end:
            run_end = end
    if run_end is None:
        return GpuBusy(0, 0, "no GPU records", 0)
    busy += run_end - run_start
    last = run_end  # the runs are disjoint and ordered: the last run ends last
    profiled = export.profiled_window()
    if profiled is not None and profiled[1] > profiled[0]:
        return GpuBusy(busy, profiled[1] - profiled[0], "profiled session", last - first)
    return GpuBusy(busy, last - first, "first to last GPU record", last - first)


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
            f"no {nsys.NVTX} table: the report was taken without NVTX tracing (-t nvtx), so there are no steps"
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
