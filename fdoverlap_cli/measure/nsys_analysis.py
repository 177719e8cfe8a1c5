"""What `fdoverlap analyze` reports about one Nsight Systems export: plain data, rendered by report/nsys_tables.

For any export: the NVTX ranges by domain and name, the memory copies by kind and by destination
memory (pageable device-to-host copies flagged: CUDA completes them before returning, so they
serialize the host with the GPU and cannot overlap), the kernels, and how busy the GPU was.
For an export of the fdoverlap engine: per path, the metrics of `measure.metrics` computed on the
spans `nsys_steps` attributes (the same numbers the tool computes from its own timing), the
comparison of the two paths, and, given the tool's own results of the same run, both side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import intervals as iv
from fdoverlap_cli.measure import metrics, nsys
from fdoverlap_cli.measure.nsys_steps import Attribution, attribute, is_instrumentation_kernel
from fdoverlap_cli.measure.records import Kind, Span, SpanTable

TOP_KERNELS = 10
DESTINATIONS = ("pinned", "pageable", "device")  # always reported, zero when absent
COPY_KINDS = ("htod", "dtoh", "dtod")

# The agreement targets between nsys and the tool's own timing: (quantity, how the difference is taken, target).
AGREEMENT = (
    ("hidden", "points", 0.02),  # hidden fraction: within 2 percentage points
    ("compute_mean_ns", "relative", 0.05),  # mean per-step |C_k|: within 5%
    ("bubble_mean_ns", "relative", None),  # shown, no target
    ("gpu_busy", "points", None),
)


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


@dataclass(frozen=True)
class PathReport:
    """One path of an fdoverlap export: its metrics, its mean |C_k|, and where its GPU work went."""

    name: str
    metrics: metrics.PathMetrics
    compute_mean_ns: float | None
    work: dict[str, Any]

    @property
    def kernel_busy(self) -> float | None:
        """|∪ C_k kernels| / GPU window: GPU busy without the idle time between kernels inside a stage."""
        window = self.metrics.gpu_window_ns
        return self.work["kernel_busy_ns"] / window if window else None

    def to_dict(self) -> dict[str, Any]:
        m = {k: v for k, v in self.metrics.to_dict().items() if k != "per_step"}
        return {
            "metrics": m,
            "compute_mean_ns": self.compute_mean_ns,
            "kernel_busy": self.kernel_busy,
            "work": self.work,
        }


@dataclass(frozen=True)
class Agreement:
    """One quantity of one path from the tool's own timing and from nsys, and whether they agree."""

    path: str
    quantity: str
    tool: float | None
    nsys: float | None
    difference: float | None  # nsys - tool, in points (fractions) or relative to the tool's value
    measure: str  # "points" or "relative"
    target: float | None

    @property
    def agrees(self) -> bool | None:
        if self.target is None or self.difference is None:
            return None
        return abs(self.difference) <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "agrees": self.agrees}


@dataclass
class NsysAnalysis:
    """Everything analyze reports; `to_dict` is its JSON."""

    file: str
    schema_version: str
    product: str
    warnings: list[str]
    notes: list[str]
    ranges: list[RangeSummary]
    copies: CopySummary
    kernels: KernelSummary
    gpu: GpuBusy
    attribution: Attribution
    unavailable: str | None  # why there are no per-step metrics
    paths: dict[str, PathReport] = field(default_factory=dict)
    comparison: metrics.Comparison | None = None
    against: list[Agreement] | None = None
    against_file: str | None = None

    def timeline(self) -> tuple[dict[str, SpanTable], dict[str, list[tuple[Span, Span]]]]:
        """Each path's spans and its (launch, GPU record) flows, for measure.timeline."""
        paths = self.attribution.paths
        return {k: p.spans for k, p in paths.items()}, {k: p.flows for k, p in paths.items()}

    def to_dict(self) -> dict[str, Any]:
        a = self.attribution
        return {
            "source": {
                "file": self.file,
                "schema_version": self.schema_version,
                "written_against": nsys.WRITTEN_AGAINST,
                "product": self.product,
            },
            "warnings": self.warnings,
            "notes": self.notes,
            "nvtx": {"ranges": [r.to_dict() for r in self.ranges]},
            "copies": self.copies.to_dict(),
            "kernels": self.kernels.to_dict(),
            "gpu": self.gpu.to_dict(),
            "per_step": {
                "available": self.unavailable is None,
                "reason": self.unavailable,
                "steps_outside_paths": a.steps_outside_paths,
                "gpu_records_outside_paths": a.gpu_outside_paths,
            },
            "paths": {k: p.to_dict() for k, p in self.paths.items()},
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "against": None
            if self.against is None
            else {"file": self.against_file, "rows": [r.to_dict() for r in self.against]},
        }


# --------------------------------------------------------------------------- the summaries of any export


def _ranges(export: nsys.NsysExport) -> list[RangeSummary]:
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


def _copies(export: nsys.NsysExport, notes: list[str]) -> CopySummary:
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


def _kernels(export: nsys.NsysExport) -> KernelSummary:
    names = export.distinct_names(nsys.KERNEL, "shortName")
    count = total = instrumentation = 0
    top = []
    for t in export.kernel_totals():
        name = names.get(t.name_id, f"<string {t.name_id}>")
        count += t.count
        total += t.total_ns or 0
        instrumentation += t.count if is_instrumentation_kernel(name) else 0
        if len(top) < TOP_KERNELS:
            top.append((name, t.count, t.total_ns or 0))
    return KernelSummary(count, total, instrumentation, tuple(top))


def _gpu_busy(export: nsys.NsysExport) -> GpuBusy:
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


def _table_notes(export: nsys.NsysExport) -> list[str]:
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


# --------------------------------------------------------------------------- per-step metrics


def compute_mean_ns(spans: SpanTable, window: tuple[int, int] | None = None) -> float | None:
    """mean_k |C_k|: the mean over steps with compute of the union of step k's compute intervals."""
    c = spans.of_kind(Kind.COMPUTE)
    if window is not None:
        c = c.select((c.step >= window[0]) & (c.step <= window[1]))
    if len(c) == 0:
        return None
    steps, group = np.unique(c.step, return_inverse=True)
    return float(iv.measure_by_group(c.intervals(), group, len(steps)).mean())


def _agreement_values(m: metrics.PathMetrics, compute_mean: float | None) -> dict[str, float | None]:
    return {
        "hidden": m.hidden,
        "compute_mean_ns": compute_mean,
        "bubble_mean_ns": m.bubble_ns.mean,
        "gpu_busy": m.gpu_busy,
    }


def agreement(
    nsys_paths: dict[str, PathReport], tool_spans: dict[str, SpanTable], window: tuple[int, int] | None
) -> list[Agreement]:
    """Per path present on both sides: each AGREEMENT quantity from the tool's spans and from nsys.

    difference = nsys - tool for fractions ("points"), (nsys - tool) / tool for durations ("relative").
    """
    rows = []
    for name, report in nsys_paths.items():
        if name not in tool_spans:
            continue
        tool = _agreement_values(
            metrics.path_metrics(tool_spans[name], window=window), compute_mean_ns(tool_spans[name], window)
        )
        ours = _agreement_values(report.metrics, report.compute_mean_ns)
        for quantity, measure, target in AGREEMENT:
            a, b = tool[quantity], ours[quantity]
            if a is None or b is None:
                diff = None
            elif measure == "points":
                diff = b - a
            else:
                diff = (b - a) / a if a else None
            rows.append(Agreement(name, quantity, a, b, diff, measure, target))
    return rows


def _path_reports(attribution: Attribution, window: tuple[int, int] | None) -> dict[str, PathReport]:
    return {
        name: PathReport(
            name,
            metrics.path_metrics(p.spans, tokens=None, window=window),
            compute_mean_ns(p.spans, window),
            p.counts(),
        )
        for name, p in attribution.paths.items()
    }


def _comparison(paths: dict[str, PathReport], notes: list[str]) -> metrics.Comparison | None:
    if not {"sync", "overlap"} <= paths.keys():
        return None
    try:
        return metrics.compare(paths["sync"].metrics, paths["overlap"].metrics)
    except InputError as e:
        notes.append(f"the paths cannot be compared: {e.reason}")
        return None


# --------------------------------------------------------------------------- the entry point


def analyze(
    path: str | os.PathLike[str],
    *,
    window: tuple[int, int] | None = None,
    against: str | os.PathLike[str] | None = None,
    keep_flows: bool = False,
) -> NsysAnalysis:
    """Analyze the SQLite export at `path` (see the module docstring); `against` is a run.json of the same run.

    Bad input (not an export, unreadable, unknown schema, a run.json that does not load) is an InputError.
    """
    tool_spans = None
    if against is not None:
        from fdoverlap_cli.results import RunResult

        run = RunResult.load(str(against))
        tool_spans = {name: p.spans() for name, p in run.paths.items()}
    try:
        with nsys.NsysExport.open(path) as export:
            notes = _table_notes(export)
            analysis = NsysAnalysis(
                file=str(path),
                schema_version=export.schema_version,
                product=export.product,
                warnings=list(export.warnings),
                notes=notes,
                ranges=_ranges(export),
                copies=_copies(export, notes),
                kernels=_kernels(export),
                gpu=_gpu_busy(export),
                attribution=(attribution := attribute(export, keep_flows=keep_flows)),
                unavailable=attribution.unavailable_reason(has_cuda=nsys.RUNTIME in export.tables),
            )
    except (TypeError, ValueError, OverflowError) as e:
        # SQLite columns hold any type: a text where nsys writes an integer is a damaged export.
        raise InputError(str(path), f"unexpected values in the export ({e}); is it an unaltered nsys export?") from None
    if analysis.unavailable is None:
        analysis.paths = _path_reports(attribution, window)
        analysis.comparison = _comparison(analysis.paths, notes)
        if tool_spans is not None:
            analysis.against = agreement(analysis.paths, tool_spans, window)
            analysis.against_file = str(against)
            missing = sorted(analysis.paths.keys() - tool_spans.keys())
            if missing:
                notes.append(f"{against} has no {', '.join(missing)} path to compare with")
    elif tool_spans is not None:
        notes.append(f"--against {against}: nothing to compare, the export has no per-step metrics")
    return analysis
