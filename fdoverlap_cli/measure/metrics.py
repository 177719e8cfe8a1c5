"""The numbers the tool reports for one path over a range of steps (the comparison is `derive`'s).

Input: the `Span`s of ONE path (the engine's own timing or the nsys reader: the same records),
all int64 ns on one clock, and optionally the engine's per-step counts (`StepFacts`). Notation for
step k (see docs/architecture.md, "The timing records"):

  C_k  compute spans of step k          D_k  copy spans of step k
  S_k  save spans of step k             H_k = D_k ∪ S_k  (the work the overlap should hide)
  I_k  iteration span(s) of step k      W    all wait spans of the path
  |X|  the length of the union of X (intervals merged before measuring)

H_k includes the event wait at the start of S_k (the contract). On a GPU-bound overlap path that wait
is the host idling while the GPU finishes step k itself, which no schedule can hide behind C_{k+1}; so
`hidden_work` also reports the share of the host's real save work and the copies that is hidden:
H'_k = D_k ∪ (S_k ∖ W).

"Step k+1" is the step numbered k+1; a measured step whose successor is not measured (the last
one) has no per-step hidden fraction, bubble or step time. Steps are grouped once and every
per-step quantity is computed for all steps at once with the interval sweeps of `intervals`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import intervals as iv
from fdoverlap_cli.measure.records import KIND_CODE, Kind, Span, SpanTable

HOST_STAGES = (Kind.INSERT, Kind.PREPROCESS, Kind.POSTPROCESS, Kind.SAVE, Kind.WAIT, Kind.ITERATION)


@dataclass(frozen=True)
class StepFacts:
    """What the engine knows of each executed step besides its times (nsys knows none of it)."""

    step: np.ndarray  # int64
    generated: np.ndarray  # int64: tokens the step emitted (slots that produced one)
    batch_tokens: np.ndarray  # int64: rows of the packed batch
    prefill_tokens: np.ndarray  # int64
    model_ns: np.ndarray  # int64: host time launching the model's own work, -1 where unknown
    graph_rows: np.ndarray  # int64: the CUDA graph size the forward replayed, 0 eager, -1 no forward or unknown

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


_FACT_COLUMNS = ("batch_tokens", "prefill_tokens", "model_ns", "graph_rows")


@dataclass(frozen=True)
class Summary:
    """The distribution of one per-step quantity over the steps where it is defined."""

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
    """Host time spent in one kind of span: total and mean per span."""

    count: int
    total_ns: int

    @property
    def mean_ns(self) -> float | None:
        return self.total_ns / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total_ns": self.total_ns, "mean_ns": self.mean_ns}


@dataclass(frozen=True)
class PerStep:
    """Per-step arrays, index i = step `step[i]`; NaN where a quantity is undefined for that step."""

    step: np.ndarray  # int64, the measured step numbers, ascending
    hidden: np.ndarray  # float64: hidden_k = |H_k ∩ C_{k+1}| / |H_k|
    hidden_work: np.ndarray  # float64: |H'_k ∩ C_{k+1}| / |H'_k| with H'_k = D_k ∪ (S_k ∖ W)
    hidden_ns: np.ndarray  # int64: |H_k ∩ C_{k+1}| (0 where undefined)
    hideable_ns: np.ndarray  # int64: |H_k|
    bubble_ns: np.ndarray  # float64: GPU idle between step k's device work and C_{k+1}
    step_time_ns: np.ndarray  # float64: start(I_{k+1}) - start(I_k)
    gpu_ns: np.ndarray  # int64: G_k = |C_k ∪ D_k|
    host_busy_ns: np.ndarray  # int64: B_k = |I_k| - |I_k ∩ W|

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for f in fields(self):
            a = getattr(self, f.name)
            out[f.name] = a.tolist() if a.dtype != np.float64 else [None if math.isnan(x) else x for x in a.tolist()]
        return out

    @classmethod
    def empty(cls) -> PerStep:
        return cls(**{f.name: np.empty(0, np.float64 if f.name in _FLOAT_COLUMNS else np.int64) for f in fields(cls)})


_FLOAT_COLUMNS = ("hidden", "hidden_work", "bubble_ns", "step_time_ns")


@dataclass(frozen=True)
class PathMetrics:
    """Everything reported for one path over the measured steps (plain data; `to_dict` is JSON).

    measure/catalog.py names, labels and defines each of these for every renderer."""

    steps: int = 0
    first_step: int | None = None
    last_step: int | None = None
    wall_ns: int = 0  # T
    hidden: float | None = None  # Σ|H_k ∩ C_{k+1}| / Σ|H_k|
    hidden_ns: int = 0
    hideable_ns: int = 0
    hidden_per_step: Summary = field(default_factory=Summary)
    hidden_work: float | None = None  # the same with the waits taken out of S_k: Σ|H'_k ∩ C_{k+1}| / Σ|H'_k|
    hidden_work_per_step: Summary = field(default_factory=Summary)
    bubble_total_ns: int = 0
    bubble_ns: Summary = field(default_factory=Summary)
    gpu_busy: float | None = None  # |∪_k (C_k ∪ D_k)| / gpu_window_ns
    gpu_busy_ns: int = 0
    gpu_window_ns: int = 0
    step_time_ns: Summary = field(default_factory=Summary)
    tpot_ns: Summary = field(default_factory=Summary)
    compute_mean_ns: float | None = None  # mean_k |C_k|
    tokens: int | None = None
    tokens_per_s: float | None = None
    batch_tokens: int | None = None
    harness_ns_per_decode_step: float | None = None
    graph_steps: int | None = None  # steps whose forward replayed a CUDA graph
    eager_steps: int | None = None  # steps whose forward the host launched kernel by kernel
    limit_ns: int = 0  # T_limit = Σ_k max(G_k, B_k)
    gpu_total_ns: int = 0  # Σ_k G_k
    host_busy_total_ns: int = 0  # Σ_k B_k
    host_stages: dict[str, StageTime] = field(default_factory=dict)
    per_step: PerStep = field(default_factory=PerStep.empty)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Summary | PerStep):
                v = v.to_dict()
            elif f.name == "host_stages":
                v = {k: s.to_dict() for k, s in v.items()}
            out[f.name] = v
        return out


def select_steps(table: SpanTable, window: tuple[int, int] | None) -> SpanTable:
    """The spans of steps FIRST..LAST (inclusive); a window that selects nothing is an InputError."""
    if window is None:
        return table
    first, last = window
    if first > last:
        raise InputError("step window", f"first step {first} is after last step {last}")
    picked = table.select((table.step >= first) & (table.step <= last))
    if len(picked) == 0:
        raise InputError("step window", f"no spans in steps {first}..{last}")
    return picked


def _per_step(ufunc: np.ufunc, values: np.ndarray, groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ufunc-reduce `values` per step (np.add: sum, np.minimum: first start, ...): (int64 result, step has any)."""
    identity = {np.add: 0, np.minimum: np.iinfo(np.int64).max, np.maximum: np.iinfo(np.int64).min}[ufunc]
    out = np.full(n, identity, dtype=np.int64)
    ufunc.at(out, groups, values)
    return out, np.bincount(groups, minlength=n) > 0


def _next_minus_this(nxt: tuple[np.ndarray, np.ndarray], this: tuple[np.ndarray, np.ndarray], has_next: np.ndarray):
    """x[i+1] - y[i] (float64) where step i has a successor and both values exist; NaN elsewhere."""
    (x, x_ok), (y, y_ok) = nxt, this
    out = np.full(len(has_next), np.nan)
    i = np.flatnonzero(has_next)
    i = i[x_ok[i + 1] & y_ok[i]]
    out[i] = (x[i + 1] - y[i]).astype(np.float64)
    return out


def _hidden(
    h: np.ndarray, h_group: np.ndarray, c: np.ndarray, c_group: np.ndarray, has_next: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hidden_k, |H_k ∩ C_{k+1}|, |H_k|); hidden_k is NaN without a step k+1 or with |H_k| = 0."""
    hideable = iv.measure_by_group(h, h_group, n)
    # Label each compute span of step k+1 with its predecessor's index k, so the sweep meets H_k with C_{k+1}.
    prev = c_group - 1
    ok = prev >= 0
    ok[ok] = has_next[prev[ok]]
    hidden_ns = iv.intersection_measure_by_group(h, h_group, c[ok], prev[ok], n)
    defined = has_next & (hideable > 0)
    hidden = np.full(n, np.nan)
    hidden[defined] = hidden_ns[defined] / hideable[defined]
    return hidden, hidden_ns, hideable


def path_metrics(
    spans: Iterable[Span] | SpanTable,
    facts: StepFacts | None = None,
    window: tuple[int, int] | None = None,
) -> PathMetrics:
    """The metrics of one path over the steps `window` = (first, last) inclusive (all steps if None).

    `facts` gives the tokens each step emitted (tokens/s), its batch and the host's model launches
    (the harness cost); without them those metrics are None. Spans may come in any order. Empty input
    without a window gives empty metrics; a window that selects nothing is an InputError.
    """
    table = spans if isinstance(spans, SpanTable) else SpanTable.from_spans(spans)
    waits = iv.merge(table.of_kind(Kind.WAIT).intervals())  # W: geometric, whichever step labels them
    table = select_steps(table, window)
    if len(table) == 0:
        return PathMetrics()

    steps, group = np.unique(table.step, return_inverse=True)
    n = len(steps)
    has_next = np.zeros(n, dtype=bool)
    has_next[:-1] = steps[1:] == steps[:-1] + 1

    def part(*kinds: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.isin(table.kind, [KIND_CODE[k] for k in kinds])
        return table.start_ns[rows], table.end_ns[rows], group[rows]

    c_start, c_end, c_group = part(Kind.COMPUTE)
    g_start, g_end, g_group = part(Kind.COMPUTE, Kind.COPY)
    h_start, h_end, h_group = part(Kind.COPY, Kind.SAVE)
    i_start, i_end, i_group = part(Kind.ITERATION)
    gpu = np.column_stack([g_start, g_end])

    # hidden_k = |H_k ∩ C_{k+1}| / |H_k|; aggregate Σ_k |H_k ∩ C_{k+1}| / Σ_k |H_k| over the defined steps.
    hidden, hidden_ns, hideable = _hidden(
        np.column_stack([h_start, h_end]), h_group, np.column_stack([c_start, c_end]), c_group, has_next, n
    )
    defined = ~np.isnan(hidden)
    hideable_total = int(hideable[defined].sum())
    hidden_total = int(hidden_ns.sum())
    # hidden_work: the same with H'_k = D_k ∪ (S_k ∖ W); the pieces of S \ W keep the step of their save span.
    s_start, s_end, s_group = part(Kind.SAVE)
    work = iv.subtract(np.column_stack([s_start, s_end]), waits)
    order = np.argsort(s_start, kind="stable")
    work_group = s_group[order][np.searchsorted(s_start[order], work[:, 0], side="right") - 1]
    d_start, d_end, d_group = part(Kind.COPY)
    hidden_work, work_ns, workable = _hidden(
        np.concatenate([work, np.column_stack([d_start, d_end])]),
        np.concatenate([work_group, d_group]),
        np.column_stack([c_start, c_end]),
        c_group,
        has_next,
        n,
    )
    workable_total = int(workable[~np.isnan(hidden_work)].sum())

    # bubble_k = max(0, min start of C_{k+1} - max end of C_k ∪ D_k).
    gpu_end = _per_step(np.maximum, g_end, g_group, n)
    compute_start = _per_step(np.minimum, c_start, c_group, n)
    bubble = np.maximum(_next_minus_this(compute_start, gpu_end, has_next), 0.0)

    # G_k = |C_k ∪ D_k|;  B_k = |I_k| - |I_k ∩ W|;  T_limit = Σ_k max(G_k, B_k).
    # T_limit is the floor of a pipeline whose steps are alike (every sync run, and an overlap run of steady
    # steps, takes at least that long). When a long-GPU step's work overlaps the next step's long host
    # work, or copies on a copy stream overlap compute, a run can beat it: max(ΣG_k, ΣB_k) is the strict floor.
    gpu_ns = iv.measure_by_group(gpu, g_group, n)
    iterations, it_group = iv.merge_by_group(np.column_stack([i_start, i_end]), i_group)
    waited = iv.covered_before(waits, iterations[:, 1]) - iv.covered_before(waits, iterations[:, 0])
    host_busy_ns = iv.measure_by_group(iterations, it_group, n) - _per_step(np.add, waited, it_group, n)[0]

    # step_time_k = start(I_{k+1}) - start(I_k): the loop's period, what throughput is made of.
    iteration_start = _per_step(np.minimum, i_start, i_group, n)
    step_time = _next_minus_this(iteration_start, iteration_start, has_next)
    # tpot_k = end(S_{k+1}) - end(S_k): the time between consecutive outputs reaching the reader.
    save_end = _per_step(np.maximum, s_end, s_group, n)
    tpot = _next_minus_this(save_end, save_end, has_next)

    # T = last end - first start over all spans of the measured steps: the first iteration's start to
    # the later of the last iteration's end and the last save's end (the overlap path saves after its loop).
    wall_ns = int(table.end_ns.max() - table.start_ns.min())
    # gpu_busy = |∪_k (C_k ∪ D_k)| / (last GPU end - first GPU start).
    gpu_busy_ns = iv.measure(gpu)
    gpu_window_ns = int(g_end.max() - g_start.min()) if len(g_start) else 0
    compute_ns = iv.measure_by_group(np.column_stack([c_start, c_end]), c_group, n)
    has_compute = np.bincount(c_group, minlength=n) > 0
    counts = _counts(facts, steps, host_busy_ns)

    per_step = PerStep(
        step=steps.astype(np.int64),
        hidden=hidden,
        hidden_work=hidden_work,
        hidden_ns=hidden_ns,
        hideable_ns=hideable,
        bubble_ns=bubble,
        step_time_ns=step_time,
        gpu_ns=gpu_ns,
        host_busy_ns=host_busy_ns,
    )
    return PathMetrics(
        steps=n,
        first_step=int(steps[0]),
        last_step=int(steps[-1]),
        wall_ns=wall_ns,
        hidden=hidden_total / hideable_total if hideable_total else None,
        hidden_ns=hidden_total,
        hideable_ns=hideable_total,
        hidden_per_step=Summary.of(hidden),
        hidden_work=int(work_ns.sum()) / workable_total if workable_total else None,
        hidden_work_per_step=Summary.of(hidden_work),
        bubble_total_ns=int(np.nansum(bubble)),
        bubble_ns=Summary.of(bubble),
        gpu_busy=gpu_busy_ns / gpu_window_ns if gpu_window_ns else None,
        gpu_busy_ns=gpu_busy_ns,
        gpu_window_ns=gpu_window_ns,
        step_time_ns=Summary.of(step_time),
        tpot_ns=Summary.of(tpot),
        # compute_mean = mean over the steps with compute of |C_k| (the union of the step's compute spans).
        compute_mean_ns=float(compute_ns[has_compute].mean()) if has_compute.any() else None,
        tokens=counts["tokens"],
        tokens_per_s=counts["tokens"] / (wall_ns * 1e-9) if counts["tokens"] is not None and wall_ns else None,
        batch_tokens=counts["batch_tokens"],
        harness_ns_per_decode_step=counts["harness"],
        graph_steps=counts["graph_steps"],
        eager_steps=counts["eager_steps"],
        limit_ns=int(np.maximum(gpu_ns, host_busy_ns).sum()),
        gpu_total_ns=int(gpu_ns.sum()),
        host_busy_total_ns=int(host_busy_ns.sum()),
        host_stages=_host_stages(table),
        per_step=per_step,
    )


def _counts(facts: StepFacts | None, steps: np.ndarray, host_busy_ns: np.ndarray) -> dict[str, Any]:
    """Output and batch tokens of the measured steps, and the harness cost per decode-only step."""
    if facts is None:
        return {"tokens": None, "batch_tokens": None, "harness": None, "graph_steps": None, "eager_steps": None}
    f = facts.select(steps)
    known = (f.graph_rows >= 0).any()  # a step table without the column (an older run.json) knows neither
    # harness = mean over decode-only steps of B_k minus the host time spent launching the model's own work:
    # what the replay costs the host per step besides the forward, logits and sampling launches.
    busy = dict(zip(steps.tolist(), host_busy_ns.tolist(), strict=True))
    decode = (f.prefill_tokens == 0) & (f.model_ns >= 0)
    harness = [busy[k] - m for k, m in zip(f.step[decode].tolist(), f.model_ns[decode].tolist(), strict=True)]
    return {
        "tokens": int(f.generated.sum()),
        "batch_tokens": int(f.batch_tokens.sum()) if (f.batch_tokens >= 0).all() else None,
        "harness": float(np.mean(harness)) if harness else None,
        "graph_steps": int((f.graph_rows > 0).sum()) if known else None,
        "eager_steps": int((f.graph_rows == 0).sum()) if known else None,
    }


def _host_stages(table: SpanTable) -> dict[str, StageTime]:
    """Count and total duration of each host kind (sums of span lengths, not unions)."""
    duration = table.end_ns - table.start_ns
    out = {}
    for kind in HOST_STAGES:
        rows = table.kind == KIND_CODE[kind]
        out[kind] = StageTime(count=int(rows.sum()), total_ns=int(duration[rows].sum()))
    return out
