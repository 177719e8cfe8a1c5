"""A run derived into every number that is shown, in one place, whatever recorded it.

`derive(paths, window)` is what compare and replay (the run just measured), report (a run.json
loaded again) and analyze (the paths attributed from an nsys export) all call. Its rule for the
steps every number covers:

- a path's measured steps are the steps of its loop iterations (the worker ran them);
- `window` (FIRST, LAST) keeps those inside it;
- with both paths, each is measured over the steps both ran, so an interrupted path, or one that
  ran a step more, shortens the other's range too; a note says so.

The per-path metrics (`metrics.path_metrics`), the comparison, the notes, and so every table row,
JSON key and figure label, then cover exactly `steps`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.metrics import PathMetrics, RequestFacts, StepFacts, path_metrics
from fdoverlap_cli.measure.noise import paired
from fdoverlap_cli.measure.records import Kind, SpanTable

Window = tuple[int, int]


@dataclass(frozen=True)
class PathTiming:
    """One path as the derivation reads it: its spans, whether it ran to the end, and the engine's counts."""

    spans: SpanTable
    complete: bool = True
    facts: StepFacts | None = None  # None where only the spans are known (an nsys export)
    requests: RequestFacts | None = None  # the steps of each request's tokens (None: an nsys export)
    gpu_timed: bool = True  # False on the CPU: its copies and waits are synchronous, the GPU-only numbers None


@dataclass(frozen=True)
class Change:
    """One number on both paths; delta = overlap - sync (None where either is missing).

    within_noise: whether the paired per-step difference behind it is noise (measure/noise.py); None for
    an exact count, or where nothing was measured."""

    sync: float | None
    overlap: float | None
    within_noise: bool | None = None

    @property
    def delta(self) -> float | None:
        return None if self.sync is None or self.overlap is None else self.overlap - self.sync

    def to_dict(self) -> dict[str, float | bool | None]:
        return {"sync": self.sync, "overlap": self.overlap, "delta": self.delta, "within_noise": self.within_noise}


@dataclass(frozen=True)
class Comparison:
    """The overlap path against the sync path over the same steps."""

    speedup: float | None  # T_sync / T_overlap
    overlap_efficiency: float | None  # (T_sync - T_overlap) / (T_sync - T_limit)
    limit_ns: int | None  # T_limit of the overlap path
    changes: dict[str, Change]  # catalog key -> both values
    measurable: bool = True  # both paths timed the GPU (else speedup, efficiency and limit are None)
    speedup_within_noise: bool | None = None  # the step times' paired difference is noise

    def to_dict(self) -> dict[str, Any]:
        return {
            "speedup": self.speedup,
            "overlap_efficiency": self.overlap_efficiency,
            "limit_ns": self.limit_ns,
            "measurable": self.measurable,
            "speedup_within_noise": self.speedup_within_noise,
            "changes": {k: c.to_dict() for k, c in self.changes.items()},
        }


def _number(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def compare(sync: PathMetrics, overlap: PathMetrics) -> Comparison:
    """Speedup, overlap efficiency and the change of every path metric (both paths, same step range).

    overlap efficiency = (T_sync - T_overlap) / (T_sync - T_limit): the share of the gain a perfect
    overlap could make that the overlap path makes. T_limit is the overlap path's own: its G_k and B_k
    are measured under the conditions the overlap runs in (its contention, its copies), so it is the
    floor that path can reach. None when T_sync <= T_limit (nothing to gain). Without the GPU's timing
    (the CPU) none of the three means anything: None, and `measurable` false. Each change says whether it
    is noise by the rule of measure/noise.py, on the per-step series its catalog entry names.
    """
    if (sync.first_step, sync.last_step) != (overlap.first_step, overlap.last_step):
        raise InputError(
            "compare",
            f"the paths cover different steps (sync: {sync.steps} steps {sync.first_step}..{sync.last_step}, "
            f"overlap: {overlap.steps} steps {overlap.first_step}..{overlap.last_step})",
        )
    t_sync, t_overlap, t_limit = sync.wall_ns, overlap.wall_ns, overlap.limit_ns
    s, o = sync.to_dict(per_step=False), overlap.to_dict(per_step=False)
    measurable = sync.measurable and overlap.measurable
    changes = {}
    for m in catalog.PATH_METRICS:
        if not m.per_step:
            a, b = _number(m.value(s)), _number(m.value(o))
            noise = paired(sync, overlap, m.series) if m.series and a is not None and b is not None else None
            changes[m.key] = Change(a, b, noise)
    return Comparison(
        speedup=t_sync / t_overlap if t_overlap and measurable else None,
        overlap_efficiency=(t_sync - t_overlap) / (t_sync - t_limit)
        if measurable and t_limit is not None and t_sync > t_limit
        else None,
        limit_ns=t_limit if measurable else None,
        changes=changes,
        measurable=measurable,
        speedup_within_noise=paired(sync, overlap, catalog.STEP_TIME_SERIES) if measurable else None,
    )


@dataclass(frozen=True)
class Derived:
    """Everything shown of a run, over `steps`."""

    window: Window | None  # the steps asked for
    steps: Window | None  # the steps every number covers (None: no path measured a step)
    paths: dict[str, PathMetrics] = field(default_factory=dict)  # empty metrics for a path with no step
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": list(self.window) if self.window else None,
            "steps": list(self.steps) if self.steps else None,
            "paths": {name: m.to_dict(per_step=False) for name, m in self.paths.items()},
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "notes": list(self.notes),
        }


def _ran(timing: PathTiming) -> np.ndarray:
    """The steps whose loop iteration ran (every step with a span, where no iteration was recorded)."""
    iterations = timing.spans.of_kind(Kind.ITERATION)
    return np.unique((iterations if len(iterations) else timing.spans).step)


def _range(steps: np.ndarray) -> Window | None:
    return (int(steps[0]), int(steps[-1])) if len(steps) else None


def derive(paths: Mapping[str, PathTiming], window: Window | None = None) -> Derived:
    """The metrics of every path and their comparison, all over the same steps (see the module docstring).

    A window that holds none of the steps of a complete run is an InputError.
    """
    ran = {name: _ran(t) for name, t in paths.items()}
    if window is not None:
        first, last = window
        ran = {name: s[(s >= first) & (s <= last)] for name, s in ran.items()}
        if paths and all(t.complete for t in paths.values()) and not any(len(s) for s in ran.values()):
            raise InputError("step window", f"no spans in steps {first}..{last}")
    own = {name: _range(s) for name, s in ran.items()}
    measured = [r for r in own.values() if r is not None]
    if not measured:  # nothing ran, or an interruption came before the window
        notes = tuple(
            f"{name} was interrupted before {'the window' if window else 'its first step'}"
            for name, t in paths.items()
            if not t.complete
        )
        empty = {name: PathMetrics(measurable=t.gpu_timed) for name, t in paths.items()}
        return Derived(window, None, empty, notes=notes)
    steps = (max(r[0] for r in measured), min(r[1] for r in measured))
    notes = _notes(paths, own, steps)
    if steps[0] > steps[1]:
        raise InputError("step window", f"the paths ran no step in common ({_ranges(own)})")
    metrics = {
        name: path_metrics(t.spans, t.facts, window=steps, requests=t.requests, gpu_timed=t.gpu_timed)
        if own[name]
        else PathMetrics(measurable=t.gpu_timed)
        for name, t in paths.items()
    }
    comparison = None
    if {"sync", "overlap"} <= paths.keys() and own["sync"] and own["overlap"]:
        comparison = compare(metrics["sync"], metrics["overlap"])
    return Derived(window, steps, metrics, comparison, notes + _launch_notes(metrics))


def _ranges(own: Mapping[str, Window | None]) -> str:
    return ", ".join(f"{name} {r[0]}–{r[1]}" if r else f"{name} none" for name, r in own.items())


def _notes(paths: Mapping[str, PathTiming], own: Mapping[str, Window | None], steps: Window) -> tuple[str, ...]:
    notes = []
    for name, t in paths.items():
        if not t.complete:
            r = own[name]
            notes.append(f"{name} was interrupted " + (f"after step {r[1]}" if r else "before the measured steps"))
    if len({r for r in own.values() if r is not None}) > 1:
        notes.append(f"the paths ran different steps ({_ranges(own)}): all are measured over {steps[0]}–{steps[1]}")
    return tuple(notes)


LAUNCH_BOUND_NOTE_SHARE = 0.5  # a path with at least this share of launch-bound steps gets a note


def _launch_notes(metrics: Mapping[str, PathMetrics]) -> tuple[str, ...]:
    """A note when a path's forward mostly ran at the host's launch rate: its times are then the host's."""
    bound = {
        name: m
        for name, m in metrics.items()
        if m.launch_bound is not None and m.launch_bound >= LAUNCH_BOUND_NOTE_SHARE
    }
    if not bound:
        return ()
    shares = " and ".join(f"{100 * m.launch_bound:.1f}% of {name}'s" for name, m in bound.items())
    note = (
        f"the forward was launch-bound in {shares} steps (the GPU ended it before the host ended the stage that "
        "launched it): its time is the host's launch time, which follows the host's speed, not the design's"
    )
    if not any(m.graph_steps for m in bound.values()):
        note += "; CUDA graphs take the decode forward's launches off the host"
    return (note,)
