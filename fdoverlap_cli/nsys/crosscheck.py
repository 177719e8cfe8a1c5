"""nsys against the tool's own timing: the same quantities of the same run, side by side, with targets.

`cross_check(analysis, run)` first makes sure the run.json is the run the export profiled (the same
trace, the same steps on every path, a GPU run on the GPU the export names) and refuses any other
with one line; then derives the run over the analysis' window with `measure.derive`, the function
that derived the export's paths, and compares each AGREEMENT quantity and each category of the
exposed host time (both sources split the bubble by the same rule, measure/exposure.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import derive
from fdoverlap_cli.measure.records import Kind, SpanTable
from fdoverlap_cli.measure.schema import EXPOSED, trace_payload
from fdoverlap_cli.nsys.analysis import NsysAnalysis
from fdoverlap_cli.results import RunResult

# The agreement targets between nsys and the tool's own timing: (catalog key, how the difference is taken, target).
# "hidden: copy ∪ save" is shown without a target: the tool's D_k spans its timestamps around the copies (the
# GPU's gaps between them included), nsys's the copies alone, and on a short step that alone moves it by points.
AGREEMENT = (
    ("hidden_save_work", "points", 0.02),  # the save's work hidden: within 2 percentage points
    ("hidden", "points", None),
    ("compute_mean_ns", "relative", 0.05),  # mean per-step |C_k|: within 5%
    ("bubble_ns.mean", "relative", None),  # shown, no target
    ("gpu_busy", "points", None),
)
# Each category of the exposed host time (mean per step) where either side has some: within 10% or 20 µs.
EXPOSED_TARGET, EXPOSED_FLOOR_NS = 0.10, 20_000


@dataclass(frozen=True)
class Agreement:
    """One quantity of one path from the tool's own timing and from nsys, and whether they agree."""

    path: str
    quantity: str  # a catalog key
    tool: float | None
    nsys: float | None
    difference: float | None  # nsys - tool: in points (fractions), relative to the tool's value, or in ns (time)
    measure: str  # "points", "relative" or "time"
    target: float | None  # points, or relative (also for "time")
    floor_ns: float | None = None  # "time": agrees within the target or within this many ns

    @property
    def agrees(self) -> bool | None:
        if self.target is None or self.difference is None:
            return None
        if self.measure == "time":
            return abs(self.difference) <= max(self.target * abs(self.tool or 0), self.floor_ns or 0)
        return abs(self.difference) <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "agrees": self.agrees}


@dataclass(frozen=True)
class CrossCheck:
    file: str  # the run.json
    rows: list[Agreement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "rows": [r.to_dict() for r in self.rows]}


def _mean_copy_ns(spans: SpanTable) -> float | None:
    """Mean per step of the copies' total time, or None without copies."""
    copies = spans.of_kind(Kind.COPY)
    steps = len(np.unique(copies.step))
    return float(np.sum(copies.end_ns - copies.start_ns)) / steps if steps else None


def _ran(steps_of_iterations: np.ndarray) -> int:
    return len(np.unique(steps_of_iterations))


def check_same_run(analysis: NsysAnalysis, run: RunResult, where: str) -> None:
    """An InputError naming what differs when `run` is not the run the export profiled."""
    if not run.on_gpu:
        device = run.environment.get("device")
        raise InputError(where, f"a run on the {device}, not the GPU run the export profiled")
    gpu = (run.environment.get("paddle") or {}).get("gpu_name")
    if gpu and analysis.gpu_names and gpu not in analysis.gpu_names:
        raise InputError(where, f"a run on a {gpu}; the export profiled a {', '.join(analysis.gpu_names)}")
    ids = analysis.attribution.trace_ids
    sha = run.trace.get("sha256")
    if ids and sha and ids != {trace_payload(sha)}:
        raise InputError(where, f"a run of another trace ({run.trace.get('file')}, sha256 {sha[:12]}…)")
    for name, p in analysis.attribution.paths.items():
        if name in run.paths:
            nsys_steps = _ran(p.spans.of_kind(Kind.ITERATION).step)
            tool_steps = _ran(run.paths[name].spans().of_kind(Kind.ITERATION).step)
            if nsys_steps != tool_steps:
                raise InputError(where, f"its {name} path ran {tool_steps} steps, the export's {nsys_steps}")


def cross_check(analysis: NsysAnalysis, run: RunResult, where: str) -> CrossCheck:
    """Per path on both sides: each AGREEMENT quantity from the tool's step table and from nsys.

    difference = nsys - tool for fractions ("points"), (nsys - tool) / tool for durations ("relative").
    `where` names the run.json in the refusal and the notes.
    """
    check_same_run(analysis, run, where)
    common = {name: p.timing() for name, p in run.paths.items() if name in analysis.paths}
    tool = derive(common, analysis.window).paths if common else {}
    missing = sorted(analysis.paths.keys() - run.paths.keys())
    if missing:
        analysis.notes.append(f"{where} has no {', '.join(missing)} path to compare with")
    rows = []
    for name, metrics in tool.items():
        ours, theirs = metrics.to_dict(per_step=False), analysis.paths[name].metrics.to_dict(per_step=False)
        for key, measure, target in AGREEMENT:
            m = catalog.path_metric(key)
            a, b = m.value(ours), m.value(theirs)
            if a is None or b is None:
                diff = None
            elif measure == "points":
                diff = b - a
            else:
                diff = (b - a) / a if a else None
            rows.append(Agreement(name, key, a, b, diff, measure, target))
        copies = _mean_copy_ns(common[name].spans), _mean_copy_ns(analysis.attribution.paths[name].spans)
        if None not in copies:
            analysis.notes.append(
                f"{name}: the copies D_k are {copies[0] / 1e3:,.1f} µs a step between the tool's timestamps around "
                f"them, {copies[1] / 1e3:,.1f} µs in nsys (the copies alone); 'hidden: copy ∪ save' counts each "
                "side's own"
            )
        for category, _ in EXPOSED:
            m = catalog.path_metric(f"exposed.{category}.mean_ns")
            a, b = m.value(ours), m.value(theirs)
            if a is not None and b is not None and (a or b):
                rows.append(Agreement(name, m.key, a, b, b - a, "time", EXPOSED_TARGET, EXPOSED_FLOOR_NS))
    return CrossCheck(where, rows)
