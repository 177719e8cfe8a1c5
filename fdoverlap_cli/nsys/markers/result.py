"""What step detection without NVTX finds: plain data, JSON-serialisable with `to_dict`.

Step i is the work launched after boundary i and up to boundary i+1 (by CUDA correlation id, i.e.
in the order of the API calls), so n boundaries make n - 1 steps (an NVTX range is a whole step:
n ranges, n steps). Per step, all int64 ns on the export's clock unless said otherwise:

  gpu_end_ns        the end of the step's last GPU record (kernel, graph, copy, memset): b_i (-1: none)
  gpu_period_ns     b_i - b_{i-1}: the step time on the GPU
  host_end_ns       the marker on the host (the marker call's start, a sync's return, a range's end)
  host_period_ns    host_end_i - host_end_{i-1}: the loop's period on the host
  kernel_busy_ns    |union of the step's kernel intervals| (kernels only; whole-graph executions count)
  kernel_idle_ns    gpu_period - kernel_busy: the GPU without a kernel of this step inside its period
  bubble_ns         first kernel start of step i+1 - b_i (>= 0): the GPU's idle time between the end of
                    step i's device work and the next step's compute (NaN for the last step)
  copies            per kind and host memory (catalog.COPY_CLASSES: dtoh_pinned, ..., other): count, bytes, ns
  launch_api_ns     host time in launch calls (kernels, async copies and memsets, graph launches)
  sync_api_ns       host time blocked in synchronisation calls and blocking copies (a pageable
                    device-to-host cudaMemcpyAsync blocks until the copy is done)
  other_api_ns      every other CUDA API call
  graph_launches    cudaGraphLaunch calls; graph_kernels: kernels of graph nodes (--cuda-graph-trace=node);
                    graph_executions: whole graphs (--cuda-graph-trace=graph)
Kernels named like the tool's own timing kernels (record_timestamp, clock_samples) are counted apart
(instrumentation_kernels) and left out of everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fdoverlap_cli.measure.metrics import Summary
from fdoverlap_cli.nsys.markers.candidates import Candidate, Regularity

REPEAT_SHARE = 0.9  # work in at least this share of the steps "repeats every step"
LONG_STEP = 10.0  # a step longer than this many median steps is a gap (warm-up, no requests), not a step


def _list(a: np.ndarray) -> list:
    if a.dtype == np.float64:
        return [None if math.isnan(x) else x for x in a.tolist()]
    return a.tolist()


@dataclass(frozen=True)
class CopyColumns:
    """One kind of copy (e.g. dtoh_pinned) per step."""

    count: np.ndarray
    bytes: np.ndarray
    ns: np.ndarray

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        return {k: getattr(self, k) if arrays else _list(getattr(self, k)) for k in ("count", "bytes", "ns")}


@dataclass(frozen=True)
class CopyPerStep:
    """One kind of copy over the steps: the steps that have one, and the means per step (over all steps)."""

    steps: int
    count_per_step: float
    bytes_per_step: float
    ns_per_step: float

    @classmethod
    def of(cls, c: CopyColumns, steps: int) -> CopyPerStep:
        n = max(steps, 1)
        return cls(int((c.count > 0).sum()), *(float(a.sum() / n) for a in (c.count, c.bytes, c.ns)))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepTable:
    """Per-step arrays, index i = step i (definitions in the module docstring); NaN where undefined."""

    gpu_end_ns: np.ndarray
    gpu_period_ns: np.ndarray
    host_end_ns: np.ndarray
    host_period_ns: np.ndarray
    kernels: np.ndarray
    kernel_ns: np.ndarray
    kernel_busy_ns: np.ndarray
    kernel_idle_ns: np.ndarray
    first_kernel_ns: np.ndarray
    bubble_ns: np.ndarray
    memsets: np.ndarray
    api_calls: np.ndarray
    launch_api_ns: np.ndarray
    sync_api_ns: np.ndarray
    other_api_ns: np.ndarray
    graph_launches: np.ndarray
    graph_kernels: np.ndarray
    graph_executions: np.ndarray
    instrumentation_kernels: np.ndarray
    copies: dict[str, CopyColumns] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gpu_end_ns)

    @property
    def kernel_busy(self) -> np.ndarray:
        """kernel_busy_ns / gpu_period_ns per step (NaN without a period)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.gpu_period_ns > 0, self.kernel_busy_ns / self.gpu_period_ns, np.nan)

    @property
    def pageable_dtoh(self) -> np.ndarray:
        c = self.copies.get("dtoh_pageable")
        return c.count if c is not None else np.zeros(len(self), np.int64)

    def series(self, name: str) -> np.ndarray:
        """A per-step column by its catalog series name (`per_step.bubble_ns`, `per_step.copies.dtoh_pinned.count`)
        as float64; zeros for a kind of copy the steps do not have."""
        parts = name.removeprefix("per_step.").split(".")
        if parts[0] == "copies":
            c = self.copies.get(parts[1])
            return np.zeros(len(self)) if c is None else getattr(c, parts[2]).astype(np.float64)
        return np.asarray(getattr(self, parts[0]), dtype=np.float64)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """Every column as a list (NaN: None), or as the numpy array itself with `arrays` (render/json_stream
        writes those without building the lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "copies":
                out[f.name] = {k: c.to_dict(arrays) for k, c in v.items()}
            else:
                out[f.name] = v if arrays else _list(v)
        return out


@dataclass(frozen=True)
class Repeated:
    """Work found in most steps: a kernel by name, or a kind of copy, with its mean per step."""

    what: str  # "kernel" or "copy"
    name: str
    steps: int  # steps that have it
    share: float  # of all steps
    count_per_step: float
    ns_per_step: float
    bytes_per_step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunSummary:
    """The whole run over the steps found."""

    steps: int
    window_ns: int  # b_last - b_first: from the end of the step before the first to the end of the last
    kernel_busy_ns: int  # |union of every step's kernels|
    long_steps: int  # steps with gpu_period > LONG_STEP x the median: the loop idled or paused there
    steady_busy_ns: int  # sum of kernel_busy_ns over the other steps
    steady_window_ns: int  # sum of their gpu_period_ns
    step_time_ns: Summary  # gpu_period_ns
    host_step_time_ns: Summary
    bubble_ns: Summary
    kernel_busy_per_step: Summary  # kernel_busy per step (a fraction)
    kernels_per_step: Summary
    gpu_kernel_ns: Summary  # kernel_busy_ns: the GPU time of a step, kernels only
    launch_api_ns: Summary
    sync_api_ns: Summary
    other_api_ns: Summary
    graph_launches_per_step: Summary
    copies: dict[str, CopyPerStep]  # every one of catalog.COPY_CLASSES (zeros for a kind the steps do not have)
    pageable_dtoh_steps: int  # steps with a pageable device-to-host copy
    graph_launches: int
    graph_kernels: int
    outside: dict[str, int]  # kernels and copies launched before the first boundary or after the last
    repeats: tuple[Repeated, ...]

    @property
    def kernel_busy(self) -> float | None:
        """kernels-only GPU busy: kernel_busy_ns / window_ns."""
        return self.kernel_busy_ns / self.window_ns if self.window_ns > 0 else None

    @property
    def kernel_busy_steady(self) -> float | None:
        """kernels-only GPU busy without the long steps: steady_busy_ns / steady_window_ns."""
        return self.steady_busy_ns / self.steady_window_ns if self.steady_window_ns > 0 else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Summary):
                v = v.to_dict()
            elif f.name == "repeats":
                v = [r.to_dict() for r in v]
            elif f.name == "copies":
                v = {k: c.to_dict() for k, c in v.items()}
            out[f.name] = v
        out["kernel_busy"] = self.kernel_busy
        out["kernel_busy_steady"] = self.kernel_busy_steady
        return out


@dataclass(frozen=True)
class MarkerChoice:
    """Which marker made the steps, how it was chosen, and how regular the steps it gives are."""

    spec: str
    chosen: str  # "given" (--steps) or "automatic"
    process: int  # globalPid of the process whose steps these are
    events: int  # the marker's occurrences
    boundaries: int  # after grouping occurrences with no kernel between them
    regularity: Regularity
    sampler_like_kernels: int  # what the automatic choice compares the step count with
    candidates: tuple[Candidate, ...] = ()  # every marker tried, best first (automatic choice)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.__dict__, "regularity": self.regularity.to_dict()}
        out["candidates"] = [c.to_dict() for c in self.candidates]
        return out


@dataclass
class MarkerSteps:
    """Everything step detection without NVTX reports about one export; `to_dict` is its JSON."""

    file: str
    choice: MarkerChoice | None
    steps: StepTable | None
    run: RunSummary | None
    unavailable: str | None  # why there are no steps
    notes: list[str] = field(default_factory=list)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """The JSON; `arrays`: the per-step columns as numpy arrays (for render/json_stream)."""
        return {
            "file": self.file,
            "available": self.unavailable is None,
            "reason": self.unavailable,
            "notes": self.notes,
            "marker": self.choice.to_dict() if self.choice else None,
            "run": self.run.to_dict() if self.run else None,
            "per_step": self.steps.to_dict(arrays) if self.steps else None,
        }
