"""What `fdoverlap analyze` reports about one Nsight Systems export: plain data, rendered by render/nsys_tables.

For any export, the summaries of `summary` (NVTX ranges, copies, kernels, GPU busy). For an export
of the fdoverlap engine, per path, the spans `steps` attributes, derived by `measure.derive` (the
same function, and so the same numbers and steps, as the tool's own timing) and where the path's
GPU work went. For any other export (or when a `--steps` spec is given), the steps `nsys.markers`
finds from the CUDA activity, measured step by step. Cross-checking against the tool's own run.json
is `crosscheck`'s; two exports side by side is `versus`'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure.derive import Derived, PathTiming, Window, derive
from fdoverlap_cli.measure.metrics import PathMetrics, Summary
from fdoverlap_cli.measure.records import Kind, Span, SpanTable
from fdoverlap_cli.measure.schema import DOMAIN
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys import kernel_idle, markers, statistics, summary
from fdoverlap_cli.nsys.markers import versus
from fdoverlap_cli.nsys.steps import Attribution, PathAttribution, attribute


@dataclass(frozen=True)
class NsysPath:
    """One path of an fdoverlap export: its metrics, where its GPU work went, its kernels-only bubble, and where
    the kernels' union waited."""

    name: str
    metrics: PathMetrics
    work: dict[str, Any]  # PathAttribution.counts()
    kernel_bubble_ns: Summary = field(default_factory=Summary)
    kernel_idle: dict[str, Any] = field(default_factory=dict)  # kernel_idle.summarize over the measured steps

    @property
    def kernel_busy(self) -> float | None:
        """|∪ C_k kernels| / GPU window: GPU busy without the idle time between kernels inside a stage."""
        window = self.metrics.gpu_window_ns
        return self.work["kernel_busy_ns"] / window if window else None

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics.to_dict(per_step=False)
        return {
            "metrics": m,
            "kernel_busy": self.kernel_busy,
            "kernel_bubble_ns": self.kernel_bubble_ns.to_dict(),
            "kernel_idle": self.kernel_idle,
            "work": self.work,
        }


@dataclass
class NsysAnalysis:
    """Everything analyze reports; `to_dict` is its JSON."""

    file: str
    schema_version: str
    product: str
    gpu_names: list[str]  # the profiled machine's GPUs, when the export says
    warnings: list[str]
    notes: list[str]
    ranges: list[summary.RangeSummary]
    copies: summary.CopySummary
    kernels: summary.KernelSummary
    gpu: summary.GpuBusy
    graphs: statistics.GraphTotals
    attribution: Attribution
    unavailable: str | None  # why there are no per-step metrics
    derived: Derived | None = None  # the paths' metrics and comparison, when available
    paths: dict[str, NsysPath] = field(default_factory=dict)
    markers: markers.MarkerSteps | None = None  # the steps found without NVTX, when looked for

    @property
    def window(self) -> Window | None:
        return self.derived.window if self.derived else None

    def timeline(self) -> tuple[dict[str, SpanTable], dict[str, list[tuple[Span, Span]]]]:
        """Each path's spans and its (launch, GPU record) flows, for render.timeline."""
        paths = self.attribution.paths
        return {k: p.spans for k, p in paths.items()}, {k: p.flows for k, p in paths.items()}

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """The JSON; `arrays`: the per-step columns of the steps found without NVTX as numpy arrays."""
        a, d = self.attribution, self.derived
        return {
            "source": {
                "file": self.file,
                "schema_version": self.schema_version,
                "written_against": nsys.WRITTEN_AGAINST,
                "product": self.product,
                "gpus": self.gpu_names,
            },
            "warnings": self.warnings,
            "notes": self.notes,
            "nvtx": {"ranges": [r.to_dict() for r in self.ranges]},
            "copies": self.copies.to_dict(),
            "kernels": self.kernels.to_dict(),
            "gpu": self.gpu.to_dict(),
            "cuda_graphs": {**self.graphs._asdict(), "traced": graph_tracing(self.graphs)},
            "per_step": {
                "available": self.unavailable is None,
                "reason": self.unavailable,
                "window": list(d.window) if d and d.window else None,
                "steps": list(d.steps) if d and d.steps else None,
                "steps_outside_paths": a.steps_outside_paths,
                "gpu_records_outside_paths": a.gpu_outside_paths,
            },
            "paths": {k: p.to_dict() for k, p in self.paths.items()},
            "comparison": d.comparison.to_dict() if d and d.comparison else None,
            "markers": self.markers.to_dict(arrays) if self.markers else None,
        }


def analyze(
    file: str | os.PathLike[str],
    *,
    window: Window | None = None,
    keep_flows: bool = False,
    steps: markers.StepSpec | None = None,
    find_steps: bool | None = None,
) -> NsysAnalysis:
    """Analyze the SQLite export `file` (see the module docstring), its per-step metrics over `window`.

    The steps are found without NVTX (`steps`: the marker; None: the one that fits best) when `find_steps`
    is true, or, by default (None), when a marker is given or the export has no fdoverlap per-step metrics.
    Bad input (not an export, unreadable, unknown schema, a window with no step) is an InputError.
    """
    try:
        with nsys.NsysExport.open(file) as export:
            notes = summary.table_notes(export)
            ranges, copies = summary.ranges(export), summary.copies(export, notes)
            records = summary.GpuRecords(export)  # fed by the steps' pass over the kernels when it runs
            surely_steps = find_steps or (
                find_steps is None and (steps is not None or DOMAIN not in export.domains().values())
            )
            if not surely_steps:  # read before the attribution's spans exist, so as not to add to their peak
                records.feed(export)
            attribution = attribute(export, keep_flows=keep_flows)
            unavailable = attribution.unavailable_reason(has_cuda=nsys.RUNTIME in export.tables)
            found = None
            if find_steps or (find_steps is None and (steps is not None or unavailable is not None)):
                found = markers.find_steps(export, steps, every_kernel=None if records.summary else records)
            if records.summary is None:  # the steps' pass did not run
                records.feed(export)
            analysis = NsysAnalysis(
                file=str(file),
                schema_version=export.schema_version,
                product=export.product,
                gpu_names=export.gpu_names(),
                warnings=list(export.warnings),
                notes=notes,
                ranges=ranges,
                copies=copies,
                kernels=records.kernels(),
                gpu=records.gpu_busy(export),
                graphs=statistics.graph_totals(export),
                attribution=attribution,
                unavailable=unavailable,
                markers=found,
            )
    except (TypeError, ValueError, OverflowError) as e:
        # SQLite columns hold any type: a text where nsys writes an integer is a damaged export.
        raise InputError(str(file), f"unexpected values in the export ({e}); is it an unaltered nsys export?") from None
    if analysis.unavailable is None:
        paths = attribution.paths
        analysis.derived = derive({name: PathTiming(p.spans) for name, p in paths.items()}, window)
        analysis.notes.extend(analysis.derived.notes)
        for name, p in paths.items():
            m = analysis.derived.paths[name]
            idle = kernel_idle.summarize(p.kernel_idle, m.per_step.step, m.gpu_window_ns)
            analysis.paths[name] = NsysPath(name, m, p.counts(), _kernel_bubble(p, m), idle)
        if any(p.graph_records.count for p in paths.values()):
            analysis.notes.append(WHOLE_GRAPH_NOTE)
    return analysis


def _kernel_bubble(p: PathAttribution, m: PathMetrics) -> Summary:
    """Per measured step k with a step k+1: the GPU's idle time from the end of step k's device work (C_k ∪ D_k)
    to the first kernel of C_{k+1}, the engine's timing kernels left out: the bubble as the kernels alone show
    it, so also the launch of the first op after the stage-start timestamp that opens C_{k+1}."""
    steps = m.per_step.step
    gpu = p.spans.of_kind(Kind.COMPUTE, Kind.COPY)
    end = np.full(len(steps), np.iinfo(np.int64).min)
    inside = np.isin(gpu.step, steps)
    np.maximum.at(end, np.searchsorted(steps, gpu.step[inside]), gpu.end_ns[inside])
    first = np.array([p.first_kernel_ns.get(int(k) + 1, -1) for k in steps], dtype=np.int64)
    bubble = np.full(len(steps), np.nan)
    ok = (np.append(steps[1:] == steps[:-1] + 1, False)) & (first >= 0) & (end > np.iinfo(np.int64).min)
    bubble[ok] = np.maximum(first[ok] - end[ok], 0)
    return Summary.of(bubble)


@dataclass
class NsysVersus:
    """`analyze A --vs B`: both analyses (each with its steps found without NVTX) and the marker table's changes."""

    a: NsysAnalysis
    b: NsysAnalysis
    comparison: versus.MarkerComparison

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        return {"a": self.a.to_dict(arrays), "b": self.b.to_dict(arrays), "vs": self.comparison.to_dict()}


def analyze_versus(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    steps: markers.StepSpec | None = None,
    vs_steps: markers.StepSpec | None = None,
    window: Window | None = None,
) -> NsysVersus:
    """Both exports analyzed with their steps found without NVTX (`vs_steps` None: B's marker is `steps`)."""
    first = analyze(a, window=window, steps=steps, find_steps=True)
    second = analyze(b, window=window, steps=vs_steps if vs_steps is not None else steps, find_steps=True)
    assert first.markers is not None and second.markers is not None
    return NsysVersus(first, second, versus.compare(first.markers, second.markers))


WHOLE_GRAPH_NOTE = (
    "nsys traced the CUDA graphs as a whole (its default, --cuda-graph-trace=graph): each replay is one GPU "
    "record spanning its kernels, so C_k and 'GPU busy, kernels only' count the gaps inside a graph as busy; "
    "profile with --cuda-graph-trace=node to see the graphs' kernels"
)


def graph_tracing(g: statistics.GraphTotals) -> str | None:
    """How nsys traced the export's CUDA graphs: 'graph' (whole launches), 'node' (their kernels), None (none)."""
    return "graph" if g.records else "node" if g.node_kernels else None
