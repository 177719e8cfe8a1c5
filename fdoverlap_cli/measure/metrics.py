"""The numbers the tool reports for one path over a range of steps (the comparison is `derive`'s).

Input: the `Span`s of ONE path (the engine's own timing or the nsys reader: the same records),
all int64 ns on one clock, and optionally the engine's per-step counts (`StepFacts`) and which steps
produced each request's tokens (`RequestFacts`). Notation for step k (see docs/architecture.md,
"The timing records"):

  C_k  compute spans of step k          D_k  copy spans of step k
  S_k  save spans of step k             W    all wait spans of the path (every kind of Kind.WAITS)
  I_k  iteration span(s) of step k      S'_k = S_k ∖ W  (the save's own work)
  P_k  host preprocess_and_execute_model(k): the stage that launches the forward
  |X|  the length of the union of X (intervals merged before measuring)

The hidden fraction comes in parts (the contract): the copies (X = D_k), the save's work (X = S'_k) and
the whole as the user asked for it (X = H_k = D_k ∪ S_k), each Σ_k |X_k ∩ C_{k+1}| / Σ_k |X_k|, with the
share of S_k that is waiting beside them. H_k includes the event wait at the start of S_k: on a GPU-bound
overlap path that wait is the host idling while the GPU finishes step k itself, which no schedule can
hide behind C_{k+1}; and copies on the compute stream run before C_{k+1} by construction.

"Step k+1" is the step numbered k+1; a measured step whose successor is not measured (the last
one) has no per-step hidden fraction, bubble or step time. Steps are grouped once and every
per-step quantity is computed for all steps at once with the interval sweeps of `intervals`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import intervals as iv
from fdoverlap_cli.measure.exposure import CATEGORIES, exposed_by_category
from fdoverlap_cli.measure.quantities import (
    GPU_FIELDS,
    GPU_PER_STEP,
    PathMetrics,
    PerRequest,
    PerStep,
    RequestFacts,
    StageTime,
    StepFacts,
    Summary,
)
from fdoverlap_cli.measure.records import KIND_CODE, Kind, Span, SpanTable, Track

__all__ = ["PathMetrics", "PerStep", "RequestFacts", "StepFacts", "Summary", "path_metrics", "select_steps"]


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


def _launch_slack(c: np.ndarray, c_group: np.ndarray, p: np.ndarray, p_group: np.ndarray, n: int) -> np.ndarray:
    """end(first C_k span) - end(P_k) per step, in int64 before the float64 result (NaN without either)."""
    out = np.full(n, np.nan)
    if not len(c) or not len(p):
        return out
    order = np.lexsort((c[:, 0], c_group))
    first = order[np.r_[True, c_group[order][1:] != c_group[order][:-1]]]
    forward_end = np.zeros(n, dtype=np.int64)
    has_forward = np.zeros(n, dtype=bool)
    forward_end[c_group[first]] = c[first, 1]
    has_forward[c_group[first]] = True
    launch_end, has_launch = _per_step(np.maximum, p[:, 1], p_group, n)
    ok = has_forward & has_launch
    out[ok] = (forward_end[ok] - launch_end[ok]).astype(np.float64)
    return out


def _ratio(part: np.ndarray, whole: np.ndarray, defined: np.ndarray) -> float | None:
    """Σ part / Σ whole over the defined steps; None when the whole is empty."""
    total = int(whole[defined].sum())
    return int(part[defined].sum()) / total if total else None


def path_metrics(
    spans: Iterable[Span] | SpanTable,
    facts: StepFacts | None = None,
    window: tuple[int, int] | None = None,
    *,
    requests: RequestFacts | None = None,
    gpu_timed: bool = True,
) -> PathMetrics:
    """The metrics of one path over the steps `window` = (first, last) inclusive (all steps if None).

    `facts` gives the tokens each step emitted (tokens/s), its batch and the host's model launches
    (the harness cost); `requests` the steps of each request's first and last token (TPOT per request);
    without them those metrics are None. `gpu_timed` false (a CPU run, where every copy and wait is
    synchronous) leaves the GPU-only quantities None. Spans may come in any order. Empty input without
    a window gives empty metrics; a window that selects nothing is an InputError.
    """
    table = spans if isinstance(spans, SpanTable) else SpanTable.from_spans(spans)
    # W and the host spans of the exposed time are geometric: whichever step labels them.
    waits = iv.merge(table.of_kind(*Kind.WAITS).intervals())
    host = table.of_kind(*Kind.HOST)
    table = select_steps(table, window)
    if len(table) == 0:
        return PathMetrics(measurable=gpu_timed)

    steps, group = np.unique(table.step, return_inverse=True)
    n = len(steps)
    has_next = np.zeros(n, dtype=bool)
    has_next[:-1] = steps[1:] == steps[:-1] + 1

    def part(*kinds: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.isin(table.kind, [KIND_CODE[k] for k in kinds])
        return np.column_stack([table.start_ns[rows], table.end_ns[rows]]), group[rows], table.track[rows]

    c, c_group, _ = part(Kind.COMPUTE)
    d, d_group, d_track = part(Kind.COPY)
    g, g_group, _ = part(Kind.COMPUTE, Kind.COPY)
    s, s_group, _ = part(Kind.SAVE)
    i, i_group, _ = part(Kind.ITERATION)
    p, p_group, _ = part(Kind.PREPROCESS)

    # hidden_k = |X_k ∩ C_{k+1}| / |X_k| for X = H = D ∪ S (the whole), D (the copies), S' = S ∖ W (the save's
    # work; the pieces of S ∖ W keep the step of their save span); aggregate Σ_k |X_k ∩ C_{k+1}| / Σ_k |X_k|.
    h, h_group = np.concatenate([d, s]), np.concatenate([d_group, s_group])
    hidden, hidden_ns, hideable = _hidden(h, h_group, c, c_group, has_next, n)
    hidden_copies, copies_hidden_ns, copies_ns = _hidden(d, d_group, c, c_group, has_next, n)
    work = iv.subtract(s, waits)
    order = np.argsort(s[:, 0], kind="stable")
    work_group = s_group[order][np.searchsorted(s[order, 0], work[:, 0], side="right") - 1]
    hidden_work, work_hidden_ns, work_ns = _hidden(work, work_group, c, c_group, has_next, n)
    # save_wait_share_k = |S_k ∩ W| / |S_k| = 1 - |S'_k| / |S_k|.
    save_ns = iv.measure_by_group(s, s_group, n)
    has_save = save_ns > 0
    wait_share = np.full(n, np.nan)
    wait_share[has_save] = 1 - work_ns[has_save] / save_ns[has_save]

    # bubble_k = [max end of C_k ∪ D_k, min start of C_{k+1}), empty when C_{k+1} starts first; the exposed
    # host time splits each bubble by what the host was doing (measure/exposure.py: the rule).
    gpu_end = _per_step(np.maximum, g[:, 1], g_group, n)
    compute_start = _per_step(np.minimum, c[:, 0], c_group, n)
    bubble = np.maximum(_next_minus_this(compute_start, gpu_end, has_next), 0.0)
    has_bubble = ~np.isnan(bubble)
    bubbles = np.zeros((n, 2), dtype=np.int64)
    k = np.flatnonzero(has_bubble)
    bubbles[k, 0] = gpu_end[0][k]
    bubbles[k, 1] = gpu_end[0][k] + bubble[k].astype(np.int64)
    exposed = exposed_by_category(bubbles, host).astype(np.float64)
    exposed[~has_bubble] = np.nan

    # G_k = |C_k ∪ D_k|;  B_k = |I_k| - |I_k ∩ W|;  T_limit = Σ_k max(G_k, B_k).
    # T_limit is the floor of a pipeline whose steps are alike (every sync run, and an overlap run of steady
    # steps, takes at least that long). When a long-GPU step's work overlaps the next step's long host
    # work, or copies on a copy stream overlap compute, a run can beat it: max(ΣG_k, ΣB_k) is the strict floor.
    gpu_ns = iv.measure_by_group(g, g_group, n)
    iterations, it_group = iv.merge_by_group(i, i_group)
    waited = iv.covered_before(waits, iterations[:, 1]) - iv.covered_before(waits, iterations[:, 0])
    host_busy_ns = iv.measure_by_group(iterations, it_group, n) - _per_step(np.add, waited, it_group, n)[0]
    limit = np.maximum(gpu_ns, host_busy_ns)

    # launch_slack_k = end(C_k's first span: the forward) - end(P_k), P_k the host's preprocess_and_execute_model(k).
    # <= 0: the GPU finished the forward before the host finished launching it, so it ran at the launch rate.
    launch_slack = _launch_slack(c, c_group, p, p_group, n)
    has_slack = ~np.isnan(launch_slack)

    # step_time_k = start(I_{k+1}) - start(I_k): the loop's period, what throughput is made of.
    iteration_start = _per_step(np.minimum, i[:, 0], i_group, n)
    step_time = _next_minus_this(iteration_start, iteration_start, has_next)
    # itl_k = end(S_{k+1}) - end(S_k): the time between consecutive outputs reaching the reader (per step).
    save_end = _per_step(np.maximum, s[:, 1], s_group, n)
    itl = _next_minus_this(save_end, save_end, has_next)

    # T = last end - first start over all spans of the measured steps: the first iteration's start to
    # the later of the last iteration's end and the last save's end (the overlap path saves after its loop).
    wall_ns = int(table.end_ns.max() - table.start_ns.min())
    # gpu_busy = |∪_k (C_k ∪ D_k)| / (last GPU end - first GPU start): C_k as stage intervals (stage-bounded).
    gpu_busy_ns = iv.measure(g)
    gpu_window_ns = int(g[:, 1].max() - g[:, 0].min()) if len(g) else 0
    compute_ns = iv.measure_by_group(c, c_group, n).astype(np.float64)
    compute_ns[np.bincount(c_group, minlength=n) == 0] = np.nan
    counts = _counts(facts, steps, host_busy_ns)
    per_request = _per_request(requests, steps, save_end)
    bubble_total = int(np.nansum(bubble))

    per_step = PerStep(
        step=steps.astype(np.int64),
        hidden=hidden,
        hidden_copies=hidden_copies,
        hidden_save_work=hidden_work,
        save_wait_share=wait_share,
        hidden_ns=hidden_ns.astype(np.float64),
        hideable_ns=hideable.astype(np.float64),
        bubble_ns=bubble,
        step_time_ns=step_time,
        itl_ns=itl,
        gpu_ns=gpu_ns.astype(np.float64),
        compute_ns=compute_ns,
        host_busy_ns=host_busy_ns,
        limit_ns=limit.astype(np.float64),
        harness_ns=counts["harness_per_step"],
        launch_slack_ns=launch_slack,
        stage_ns=_stage_per_step(table, group, n),
        exposed_ns={category: exposed[:, j] for j, category in enumerate(CATEGORIES)},
    )
    defined = ~np.isnan(hidden)
    copies_defined, work_defined = ~np.isnan(hidden_copies), ~np.isnan(hidden_work)
    metrics = PathMetrics(
        steps=n,
        first_step=int(steps[0]),
        last_step=int(steps[-1]),
        measurable=gpu_timed,
        wall_ns=wall_ns,
        hidden=_ratio(hidden_ns, hideable, defined),
        hidden_ns=int(hidden_ns[defined].sum()),
        hideable_ns=int(hideable[defined].sum()),
        hidden_per_step=Summary.of(hidden),
        hidden_copies=_ratio(copies_hidden_ns, copies_ns, copies_defined),
        copies_on_compute_stream=_on_compute_stream(d_track, table.track_names),
        hidden_save_work=_ratio(work_hidden_ns, work_ns, work_defined),
        save_wait_share=1 - int(work_ns.sum()) / int(save_ns.sum()) if save_ns.sum() else None,
        bubble_total_ns=bubble_total,
        bubble_ns=Summary.of(bubble),
        exposed={
            category: StageTime(int(has_bubble.sum()), int(np.nansum(exposed[:, j])))
            for j, category in enumerate(CATEGORIES)
        },
        exposed_share=bubble_total / wall_ns if wall_ns and has_bubble.any() else None,
        gpu_busy=gpu_busy_ns / gpu_window_ns if gpu_window_ns else None,
        gpu_busy_ns=gpu_busy_ns,
        gpu_window_ns=gpu_window_ns,
        step_time_ns=Summary.of(step_time),
        itl_ns=Summary.of(itl),
        tpot_ns=Summary.of(per_request.tpot_ns),
        # compute_mean = mean over the steps with compute of |C_k| (the union of the step's compute spans).
        compute_mean_ns=float(np.nanmean(compute_ns)) if (~np.isnan(compute_ns)).any() else None,
        tokens=counts["tokens"],
        tokens_per_s=counts["tokens"] / (wall_ns * 1e-9) if counts["tokens"] is not None and wall_ns else None,
        batch_tokens=counts["batch_tokens"],
        harness_ns_per_decode_step=counts["harness"],
        graph_steps=counts["graph_steps"],
        eager_steps=counts["eager_steps"],
        launch_bound=float(np.mean(launch_slack[has_slack] <= 0)) if has_slack.any() else None,
        limit_ns=int(limit.sum()),
        gpu_total_ns=int(gpu_ns.sum()),
        host_busy_total_ns=int(host_busy_ns.sum()),
        host_stages=_host_stages(table),
        per_step=per_step,
        per_request=per_request,
    )
    return metrics if gpu_timed else _without_gpu(metrics)


def _on_compute_stream(tracks: np.ndarray, names: tuple[str, ...]) -> bool | None:
    """Whether every copy ran on the compute stream (None without copies)."""
    if len(tracks) == 0:
        return None
    return Track.COMPUTE_STREAM in names and bool((tracks == names.index(Track.COMPUTE_STREAM)).all())


def _without_gpu(m: PathMetrics) -> PathMetrics:
    """The metrics with every GPU-only quantity None (its per-step columns NaN): not measured, not zero."""
    blank = np.full(len(m.per_step.step), np.nan)
    per_step = dataclasses.replace(
        m.per_step,
        exposed_ns={category: blank for category in m.per_step.exposed_ns},
        **{name: blank for name in GPU_PER_STEP},
    )
    return dataclasses.replace(m, per_step=per_step, **{name: None for name in GPU_FIELDS})


def _counts(facts: StepFacts | None, steps: np.ndarray, host_busy_ns: np.ndarray) -> dict[str, Any]:
    """Output and batch tokens of the measured steps, and the harness cost per decode-only step."""
    harness = np.full(len(steps), np.nan)
    if facts is None:
        none = dict.fromkeys(("tokens", "batch_tokens", "harness", "graph_steps", "eager_steps"))
        return {**none, "harness_per_step": harness}
    f = facts.select(steps)
    known = (f.graph_rows >= 0).any()  # a step table without the column (an older run.json) knows neither
    # Output tokens: what the steps' messages carried (a preemption marker sent in a token's place is none);
    # where the step table does not say, the tokens the steps produced.
    tokens = int(np.where(f.emitted >= 0, f.emitted, f.generated).sum())
    # harness = mean over decode-only steps of B_k minus the host time spent launching the model's own work:
    # what the replay costs the host per step besides the forward, logits and sampling launches.
    rows = np.searchsorted(steps, f.step)
    decode = (f.prefill_tokens == 0) & (f.model_ns >= 0)
    harness[rows[decode]] = host_busy_ns[rows[decode]] - f.model_ns[decode]
    return {
        "tokens": tokens,
        "batch_tokens": int(f.batch_tokens.sum()) if (f.batch_tokens >= 0).all() else None,
        "harness": float(np.nanmean(harness)) if decode.any() else None,
        "harness_per_step": harness,
        "graph_steps": int((f.graph_rows > 0).sum()) if known else None,
        "eager_steps": int((f.graph_rows == 0).sum()) if known else None,
    }


def _per_request(requests: RequestFacts | None, steps: np.ndarray, save_end: tuple[np.ndarray, np.ndarray]):
    """TPOT per request, as serving benchmarks define it: (t_last - t_first) / (n - 1), t = the end of the save
    of the step that produced the token; over the requests whose first and last tokens lie in the measured
    steps (a request cut by the window has no TPOT over it)."""
    if requests is None or len(steps) == 0:
        return PerRequest.empty()
    end, ok = save_end
    inside = (requests.first_step >= steps[0]) & (requests.last_step <= steps[-1]) & (requests.tokens >= 1)
    first = np.searchsorted(steps, requests.first_step[inside])
    last = np.searchsorted(steps, requests.last_step[inside])
    first, last = np.minimum(first, len(steps) - 1), np.minimum(last, len(steps) - 1)
    found = (steps[first] == requests.first_step[inside]) & (steps[last] == requests.last_step[inside])
    found &= ok[first] & ok[last]
    n = requests.tokens[inside]
    tpot = np.full(int(inside.sum()), np.nan)
    many = found & (n >= 2)
    tpot[many] = (end[last[many]] - end[first[many]]) / (n[many] - 1)
    return PerRequest(requests.request[inside][found], tpot[found])


def _stage_per_step(table: SpanTable, group: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per step, Σ of the lengths of each host kind's spans (NaN where the step has none)."""
    duration = table.end_ns - table.start_ns
    out = {}
    for kind in Kind.HOST:
        rows = table.kind == KIND_CODE[kind]
        total = np.zeros(n, dtype=np.float64)
        np.add.at(total, group[rows], duration[rows])
        total[np.bincount(group[rows], minlength=n) == 0] = np.nan
        out[kind] = total
    return out


def _host_stages(table: SpanTable) -> dict[str, StageTime]:
    """Count and total duration of each host kind (sums of span lengths, not unions)."""
    duration = table.end_ns - table.start_ns
    out = {}
    for kind in Kind.HOST:
        rows = table.kind == KIND_CODE[kind]
        out[kind] = StageTime(count=int(rows.sum()), total_ns=int(duration[rows].sum()))
    return out
