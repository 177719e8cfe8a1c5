"""The typed results of measuring one path (`metrics.path_metrics`), and what the engine adds to the spans.

Plain data: `to_dict()` is JSON. A quantity that cannot be measured is None (NaN in a per-step array,
null in JSON), never a zero: GPU-only quantities on a run without GPU timing (`measurable` false).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StepFacts:
    """What the engine knows of each executed step besides its times (nsys knows none of it)."""

    step: np.ndarray  # int64
    generated: np.ndarray  # int64: tokens the step emitted (slots that produced one)
    batch_tokens: np.ndarray  # int64: rows of the packed batch
    prefill_tokens: np.ndarray  # int64
    model_ns: np.ndarray  # int64: host time launching the model's own work, -1 where unknown
    graph_rows: np.ndarray  # int64: the CUDA graph size the forward replayed, 0 eager, -1 no forward or unknown
    emitted: np.ndarray  # int64: tokens the step's message carried, -1 where unknown (then `generated` counts)

    @classmethod
    def of(cls, step: Sequence[int], generated: Sequence[int], **columns: Sequence[int]) -> StepFacts:
        """From columns of equal length; a column left out is -1 (unknown) everywhere."""
        n = len(step)
        get = {name: np.asarray(columns.get(name, np.full(n, -1)), dtype=np.int64) for name in _FACT_COLUMNS}
        return cls(np.asarray(step, np.int64), np.asarray(generated, np.int64), **get)

    def select(self, steps: np.ndarray) -> StepFacts:
        """The rows of the given steps."""
        rows = np.isin(self.step, steps)
        return StepFacts(*(getattr(self, f.name)[rows] for f in fields(self)))


_FACT_COLUMNS = ("batch_tokens", "prefill_tokens", "model_ns", "graph_rows", "emitted")


@dataclass(frozen=True)
class RequestFacts:
    """Which steps produced each request's tokens (the trace's schedule): what TPOT per request is timed by."""

    request: np.ndarray  # int64: the request's index in the trace
    first_step: np.ndarray  # int64: the step that produced its first token
    last_step: np.ndarray  # int64: ... its last token
    tokens: np.ndarray  # int64: the tokens it produced from first_step to last_step

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]]) -> RequestFacts:
        """From (first_step, last_step, tokens) per request, in request order."""
        a = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return cls(np.arange(len(a), dtype=np.int64), a[:, 0], a[:, 1], a[:, 2])


@dataclass(frozen=True)
class Summary:
    """The distribution of one per-step (or per-request) quantity over the entries where it is defined."""

    count: int = 0
    mean: float | None = None
    min: float | None = None
    p10: float | None = None
    p50: float | None = None
    p90: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        """Summary of the non-NaN entries of `values` (percentiles: numpy's linear interpolation)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        if len(v) == 0:
            return cls()
        p10, p50, p90 = np.percentile(v, [10, 50, 90]).tolist()
        return cls(len(v), float(v.mean()), float(v.min()), p10, p50, p90, float(v.max()))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StageTime:
    """Time in one kind of span, or in one category of exposed time: total, and mean over `count`."""

    count: int
    total_ns: int

    @property
    def mean_ns(self) -> float | None:
        return self.total_ns / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total_ns": self.total_ns, "mean_ns": self.mean_ns}


def _floats(a: np.ndarray) -> list:
    return a.tolist() if a.dtype != np.float64 else [None if math.isnan(x) else x for x in a.tolist()]


@dataclass(frozen=True)
class PerStep:
    """Per-step arrays, index i = step `step[i]`; NaN where a quantity is undefined for that step.

    The per-step series the comparison's noise rule pairs across the paths (measure/noise.py).
    """

    step: np.ndarray  # int64, the measured step numbers, ascending
    hidden: np.ndarray  # float64: hidden_k = |H_k ∩ C_{k+1}| / |H_k|, H_k = D_k ∪ S_k
    hidden_copies: np.ndarray  # float64: |D_k ∩ C_{k+1}| / |D_k|
    hidden_save_work: np.ndarray  # float64: |S'_k ∩ C_{k+1}| / |S'_k|, S'_k = S_k ∖ W
    save_wait_share: np.ndarray  # float64: |S_k ∩ W| / |S_k|
    hidden_ns: np.ndarray  # float64: |H_k ∩ C_{k+1}|
    hideable_ns: np.ndarray  # float64: |H_k|
    bubble_ns: np.ndarray  # float64: GPU idle between step k's device work and C_{k+1}
    step_time_ns: np.ndarray  # float64: start(I_{k+1}) - start(I_k)
    itl_ns: np.ndarray  # float64: end(S_{k+1}) - end(S_k)
    gpu_ns: np.ndarray  # float64: G_k = |C_k ∪ D_k|
    compute_ns: np.ndarray  # float64: |C_k| (NaN for a step without compute)
    host_busy_ns: np.ndarray  # int64: B_k = |I_k| - |I_k ∩ W|
    limit_ns: np.ndarray  # float64: max(G_k, B_k)
    harness_ns: np.ndarray  # float64: B_k minus the host's model launches, on decode-only steps
    launch_slack_ns: np.ndarray  # float64: end of C_k's first span (the forward) - end of P_k (NaN: either missing)
    stage_ns: dict[str, np.ndarray] = field(default_factory=dict)  # host kind -> Σ its spans' lengths (NaN: none)
    exposed_ns: dict[str, np.ndarray] = field(default_factory=dict)  # category -> exposed time (NaN: no bubble)

    def series(self, name: str) -> np.ndarray:
        """A column by name; `stage_ns.save`, `exposed_ns.readback` name a column of the dicts."""
        column, _, key = name.partition(".")
        value = getattr(self, column)
        return value[key] if key else value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            a = getattr(self, f.name)
            out[f.name] = {k: _floats(v) for k, v in a.items()} if isinstance(a, dict) else _floats(a)
        return out

    @classmethod
    def empty(cls) -> PerStep:
        columns = {f.name: np.empty(0, np.float64) for f in fields(cls) if f.name not in ("stage_ns", "exposed_ns")}
        columns.update({name: np.empty(0, np.int64) for name in ("step", "host_busy_ns")})
        return cls(**columns)


@dataclass(frozen=True)
class PerRequest:
    """Per-request arrays over the requests whose first and last tokens lie in the measured steps."""

    request: np.ndarray  # int64: the request's index in the trace
    tpot_ns: np.ndarray  # float64: (t_last - t_first) / (n - 1); NaN for a request of one token

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.request.tolist(), "tpot_ns": _floats(self.tpot_ns)}

    @classmethod
    def empty(cls) -> PerRequest:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64))


@dataclass(frozen=True)
class PathMetrics:
    """Everything reported for one path over the measured steps (plain data; `to_dict` is JSON).

    measure/catalog.py names, labels and defines each of these for every renderer. Fields of GPU_FIELDS
    are None when `measurable` is false (a run without GPU timing: the CPU)."""

    steps: int = 0
    first_step: int | None = None
    last_step: int | None = None
    measurable: bool = True  # the GPU's timing was measured, so the GPU-only quantities mean something
    wall_ns: int = 0  # T
    hidden: float | None = None  # Σ|H_k ∩ C_{k+1}| / Σ|H_k|, H_k = D_k ∪ S_k
    hidden_ns: int | None = 0
    hideable_ns: int | None = 0
    hidden_per_step: Summary | None = field(default_factory=Summary)
    hidden_copies: float | None = None  # Σ|D_k ∩ C_{k+1}| / Σ|D_k|
    copies_on_compute_stream: bool | None = None  # D_k on C_k's stream: none can overlap C_{k+1}
    hidden_save_work: float | None = None  # Σ|S'_k ∩ C_{k+1}| / Σ|S'_k|
    save_wait_share: float | None = None  # Σ|S_k ∩ W| / Σ|S_k|
    bubble_total_ns: int | None = 0
    bubble_ns: Summary | None = field(default_factory=Summary)
    exposed: dict[str, StageTime] | None = field(default_factory=dict)  # category -> its share of the bubbles
    exposed_share: float | None = None  # Σ bubble_k / T
    gpu_busy: float | None = None  # |∪_k (C_k ∪ D_k)| / gpu_window_ns
    gpu_busy_ns: int | None = 0
    gpu_window_ns: int | None = 0
    step_time_ns: Summary = field(default_factory=Summary)
    itl_ns: Summary = field(default_factory=Summary)  # per step: end(S_{k+1}) - end(S_k)
    tpot_ns: Summary = field(default_factory=Summary)  # per request: (t_last - t_first) / (n - 1)
    compute_mean_ns: float | None = None  # mean_k |C_k|
    tokens: int | None = None
    tokens_per_s: float | None = None
    batch_tokens: int | None = None
    harness_ns_per_decode_step: float | None = None
    graph_steps: int | None = None  # steps whose forward replayed a CUDA graph
    eager_steps: int | None = None  # steps whose forward the host launched kernel by kernel
    launch_bound: float | None = None  # share of the steps with launch_slack_k <= 0
    limit_ns: int | None = 0  # T_limit = Σ_k max(G_k, B_k)
    gpu_total_ns: int | None = 0  # Σ_k G_k
    host_busy_total_ns: int = 0  # Σ_k B_k
    host_stages: dict[str, StageTime] = field(default_factory=dict)
    per_step: PerStep = field(default_factory=PerStep.empty)
    per_request: PerRequest = field(default_factory=PerRequest.empty)

    def to_dict(self, per_step: bool = True) -> dict[str, Any]:
        """Every field as JSON; without the per-step and per-request arrays unless `per_step`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if not per_step and f.name in ("per_step", "per_request"):
                continue
            if isinstance(v, Summary | PerStep | PerRequest):
                v = v.to_dict()
            elif isinstance(v, dict):
                v = {k: s.to_dict() for k, s in v.items()}
            out[f.name] = v
        return out


# The quantities only the GPU's timing gives: None on a run without it (their per-step columns NaN).
GPU_FIELDS = (
    "hidden",
    "hidden_ns",
    "hideable_ns",
    "hidden_per_step",
    "hidden_copies",
    "copies_on_compute_stream",
    "hidden_save_work",
    "save_wait_share",
    "bubble_total_ns",
    "bubble_ns",
    "exposed",
    "exposed_share",
    "gpu_busy",
    "gpu_busy_ns",
    "gpu_window_ns",
    "compute_mean_ns",
    "launch_bound",
    "limit_ns",
    "gpu_total_ns",
)
GPU_PER_STEP = (
    "hidden",
    "hidden_ns",
    "hideable_ns",
    "hidden_copies",
    "hidden_save_work",
    "save_wait_share",
    "bubble_ns",
    "gpu_ns",
    "compute_ns",
    "launch_slack_ns",
    "limit_ns",
)
