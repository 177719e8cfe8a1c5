"""Metrics: hand-built spans with known answers, edge cases, and properties of simulated runs."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure.derive import compare
from fdoverlap_cli.measure.metrics import RequestFacts, StepFacts, path_metrics
from fdoverlap_cli.measure.quantities import GPU_FIELDS
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from tests.loop_model import StepCosts, costs_strategy
from tests.loop_model import spans as simulate


def compute(step, a, b):
    return Span(Kind.COMPUTE, step, a, b, Track.COMPUTE_STREAM)


def copy(step, a, b, track=Track.COPY_STREAM):
    return Span(Kind.COPY, step, a, b, track)


def host(kind, step, a, b):
    return Span(kind, step, a, b, Track.HOST)


# An overlap run whose save and copy of step k lie inside C_{k+1}: everything hidden.
OVERLAP = [
    host(Kind.ITERATION, 0, 0, 60),
    compute(0, 10, 100),
    copy(0, 100, 110),
    host(Kind.ITERATION, 1, 60, 200),
    host(Kind.SAVE, 0, 100, 180),
    host(Kind.WAIT, 1, 100, 110),
    compute(1, 100, 300),
    copy(1, 300, 310),
    host(Kind.ITERATION, 2, 200, 400),
    host(Kind.SAVE, 1, 305, 380),
    host(Kind.WAIT, 2, 305, 310),
    compute(2, 300, 500),
    copy(2, 500, 510),
    host(Kind.SAVE, 2, 510, 560),
]

# A sync run: step k+1's compute starts after save(k) ended: nothing hidden.
SYNC = [
    host(Kind.ITERATION, 0, 0, 200),
    compute(0, 10, 100),
    copy(0, 100, 110, Track.COMPUTE_STREAM),
    host(Kind.SAVE, 0, 100, 180),
    host(Kind.WAIT, 0, 100, 110),
    host(Kind.ITERATION, 1, 200, 400),
    compute(1, 210, 300),
    copy(1, 300, 310, Track.COMPUTE_STREAM),
    host(Kind.SAVE, 1, 300, 380),
    host(Kind.WAIT, 1, 300, 310),
]


def test_fully_hidden_overlap():
    m = path_metrics(OVERLAP, StepFacts.of([0, 1, 2], [4, 4, 4]))
    assert (m.steps, m.first_step, m.last_step) == (3, 0, 2)
    assert m.hidden == 1.0 and (m.hidden_ns, m.hideable_ns) == (160, 160)
    assert m.per_step.hidden.tolist()[:2] == [1.0, 1.0]
    assert m.hidden_per_step.count == 2 and m.hidden_per_step.min == 1.0
    assert m.bubble_total_ns == 0 and m.per_step.bubble_ns.tolist()[:2] == [0.0, 0.0]
    assert m.gpu_busy == 1.0 and m.gpu_busy_ns == 500 and m.gpu_window_ns == 500
    assert m.per_step.gpu_ns.tolist() == [100, 210, 210]
    assert m.per_step.host_busy_ns.tolist() == [60, 130, 195]  # waits inside each iteration removed
    assert m.limit_ns == 100 + 210 + 210
    assert m.wall_ns == 560  # the first iteration's start to the last save's end (after the loop)
    assert m.per_step.step_time_ns.tolist()[:2] == [60.0, 140.0] and m.step_time_ns.mean == 100.0
    assert m.itl_ns.mean == 190.0  # save ends 180, 380, 560
    assert m.tokens == 12 and m.tokens_per_s == pytest.approx(12 / 560e-9)
    assert m.host_stages[Kind.SAVE].count == 3 and m.host_stages[Kind.SAVE].total_ns == 80 + 75 + 50
    assert m.host_stages[Kind.WAIT].mean_ns == 7.5


def test_fully_exposed_sync():
    m = path_metrics(SYNC)
    assert m.hidden == 0.0 and m.hideable_ns == 80
    assert m.per_step.bubble_ns.tolist()[0] == 100.0 and m.bubble_total_ns == 100
    assert m.per_step.host_busy_ns.tolist() == [190, 190]
    assert m.limit_ns == 380 and m.wall_ns == 400
    assert m.gpu_busy == pytest.approx(200 / 300)
    assert m.tokens is None and m.tokens_per_s is None


def test_partial_hiding():
    spans = [s if s != compute(1, 210, 300) else compute(1, 150, 300) for s in SYNC]
    m = path_metrics(spans)
    assert m.hidden == pytest.approx(30 / 80)  # save(0) [100, 180) meets C_1 [150, 300) for 30 ns
    assert m.per_step.bubble_ns.tolist()[0] == 40.0


def test_several_compute_spans_and_overlapping_saves_are_merged_before_measuring():
    spans = [
        compute(0, 0, 10),
        copy(0, 10, 20),
        host(Kind.SAVE, 0, 15, 40),
        host(Kind.SAVE, 0, 30, 50),  # overlaps the first save: counted once
        compute(1, 20, 30),
        compute(1, 25, 35),
        compute(1, 45, 60),
    ]
    m = path_metrics(spans)
    # H_0 = [10, 50) (40 ns); C_1 = [20, 35) ∪ [45, 60): H_0 ∩ C_1 = 15 + 5.
    assert (m.hidden_ns, m.hideable_ns) == (20, 40)
    assert m.per_step.gpu_ns.tolist() == [20, 30]
    assert m.per_step.bubble_ns.tolist()[0] == 0.0  # C_1 starts at 20, step 0's device work ends at 20


def test_order_of_spans_does_not_matter():
    shuffled = OVERLAP[:]
    random.Random(7).shuffle(shuffled)
    assert path_metrics(shuffled).to_dict() == path_metrics(OVERLAP).to_dict()
    assert path_metrics(SpanTable.from_spans(OVERLAP)).to_dict() == path_metrics(OVERLAP).to_dict()


def test_window_selects_steps_and_waits_stay_geometric():
    m = path_metrics(OVERLAP, window=(1, 2))
    assert (m.steps, m.first_step, m.last_step) == (2, 1, 2)
    assert m.hidden == 1.0 and m.hideable_ns == 80
    assert m.wall_ns == 560 - 60
    assert m.per_step.host_busy_ns.tolist() == [130, 195]


@pytest.mark.parametrize("window, match", [((5, 9), "no spans in steps 5..9"), ((2, 1), "after last step")])
def test_bad_windows_are_input_errors(window, match):
    with pytest.raises(InputError, match=match):
        path_metrics(OVERLAP, window=window)


def test_empty_input_gives_empty_metrics():
    m = path_metrics([])
    assert m.steps == 0 and m.hidden is None and m.gpu_busy is None and m.wall_ns == 0
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))["per_step"]["step"] == []


def test_one_step_has_no_per_step_successor_quantities():
    m = path_metrics([s for s in OVERLAP if s.step == 0])
    assert m.steps == 1 and m.hidden is None and m.bubble_ns.count == 0 and m.step_time_ns.count == 0
    assert m.limit_ns == 100  # max(G_0 = 100, B_0 = 60)


def test_a_run_without_gpu_spans_still_computes():
    m = path_metrics([s for s in OVERLAP if s.kind not in Kind.GPU])
    assert m.gpu_busy is None and m.gpu_total_ns == 0
    assert m.hidden == 0.0  # H_k = S_k, no compute to hide behind
    assert m.limit_ns == m.host_busy_total_ns == 60 + 130 + 195
    assert m.bubble_ns.count == 0


def test_steps_with_a_gap_in_numbering_have_no_successor():
    spans = [*SYNC, *(Span(s.kind, s.step + 5, s.start_ns + 1000, s.end_ns + 1000, s.track) for s in SYNC)]
    m = path_metrics(spans)
    assert m.per_step.step.tolist() == [0, 1, 5, 6]
    assert m.hidden_per_step.count == 2  # steps 0 and 5: 1 and 6 have no measured successor


def test_bad_spans_are_input_errors():
    with pytest.raises(InputError, match="unknown span kind 'launch'"):
        path_metrics([Span("launch", 0, 0, 1)])
    with pytest.raises(InputError, match="end before they start"):
        path_metrics([host(Kind.SAVE, 0, 5, 4)])


def test_to_dict_is_json():
    m = path_metrics(OVERLAP, StepFacts.of([0, 1, 2], [1, 1, 1]))
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["per_step"]["hidden"][-1] is None  # the last step has no successor
    assert d["hidden"] == m.hidden and d["tokens"] == 3 and d["bubble_ns"] == m.bubble_ns.to_dict()


def test_compare_speedup_and_efficiency():
    sync = path_metrics(simulate("sync", 50))
    overlap = path_metrics(simulate("overlap", 50))
    c = compare(sync, overlap)
    assert c.speedup == pytest.approx(sync.wall_ns / overlap.wall_ns) and c.speedup > 1
    assert c.limit_ns == overlap.limit_ns
    assert c.overlap_efficiency == pytest.approx((sync.wall_ns - overlap.wall_ns) / (sync.wall_ns - overlap.limit_ns))
    assert c.changes["wall_ns"].delta == overlap.wall_ns - sync.wall_ns
    assert c.changes["tokens_per_s"].delta is None
    assert json.dumps(c.to_dict(), allow_nan=False)


def test_compare_without_room_to_gain_has_no_efficiency():
    m = path_metrics(OVERLAP)
    c = compare(m, m)
    assert m.wall_ns > m.limit_ns and c.overlap_efficiency == 0.0
    fast = path_metrics([compute(0, 0, 100), compute(1, 100, 200)])  # back-to-back GPU work: T = T_limit
    assert fast.wall_ns == fast.limit_ns == 200
    assert compare(fast, fast).overlap_efficiency is None


def test_compare_rejects_different_steps():
    with pytest.raises(InputError, match="different steps"):
        compare(path_metrics(OVERLAP), path_metrics(SYNC))


costs = costs_strategy((1, 12), 500)


@settings(max_examples=150, deadline=None)
@given(costs, st.sampled_from(["sync", "overlap"]), st.booleans())
def test_properties_of_simulated_runs(n_and_costs, path, copy_stream):
    n, costs = n_and_costs
    m = path_metrics(simulate(path, n, dataclasses.replace(costs, copy_stream=copy_stream), start_ns=10**12))
    hidden = m.per_step.hidden[~_nan(m.per_step.hidden)]
    assert ((hidden >= 0) & (hidden <= 1)).all()
    assert m.hidden is None or 0 <= m.hidden <= 1
    assert m.gpu_busy is None or 0 <= m.gpu_busy <= 1
    if any(costs.forward):  # GPU work in the window (a run whose kernels all take 0 ns is 0% busy)
        assert m.gpu_busy > 0
    assert (m.per_step.bubble_ns[~_nan(m.per_step.bubble_ns)] >= 0).all()
    assert (m.per_step.host_busy_ns >= 0).all()
    # One host thread and serial GPU work: neither total busy time exceeds the wall time.
    assert m.host_busy_total_ns <= m.wall_ns
    if not copy_stream:
        assert m.gpu_total_ns <= m.wall_ns
    if path == "sync":
        assert m.limit_ns <= m.wall_ns  # each iteration holds all of its step's GPU and host work
        assert m.hidden in (None, 0.0)  # nothing of step k runs after step k+1's compute started


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.lists(st.integers(0, 500), min_size=7, max_size=7))
def test_limit_bounds_steady_runs(n, durations):
    costs = StepCosts(*durations)  # the same durations every step
    sync = path_metrics(simulate("sync", n, costs))
    overlap = path_metrics(simulate("overlap", n, costs))
    assert overlap.limit_ns <= overlap.wall_ns and sync.limit_ns <= sync.wall_ns
    assert overlap.wall_ns <= sync.wall_ns
    efficiency = compare(sync, overlap).overlap_efficiency
    assert efficiency is None or 0 <= efficiency <= 1


def _nan(a):
    return a != a


def test_hidden_in_parts_on_a_gpu_bound_overlap():
    """GPU-bound overlap: save(k) mostly waits for step k's own GPU work (the whole is barely hidden); its own
    work is all behind C_{k+1}; copies on the compute stream, by construction, none."""
    spans = simulate("overlap", 40, StepCosts(forward=400_000, save=30_000))
    m = path_metrics(spans)
    assert m.bubble_ns.mean == 0
    assert m.hidden < 0.5  # the contract's H_k counts the wait, which overlaps C_k, not C_{k+1}
    assert m.hidden_save_work == 1.0  # S'_k = S_k ∖ W: the send, behind C_{k+1}
    assert m.save_wait_share > 0.8  # most of S_k is the event wait
    assert m.hidden_copies == 0.0 and m.copies_on_compute_stream is True
    assert (~np.isnan(m.per_step.hidden_save_work)).sum() == m.hidden_per_step.count


def test_copies_on_a_copy_stream_can_be_hidden():
    m = path_metrics(simulate("overlap", 20, StepCosts(copy_stream=True, postprocess=0)))
    assert m.copies_on_compute_stream is False and m.hidden_copies is not None


def test_nothing_is_hidden_on_a_sync_path():
    m = path_metrics(simulate("sync", 20, StepCosts()))
    assert m.hidden == m.hidden_save_work == m.hidden_copies == 0.0


def test_tpot_per_request_on_a_known_run():
    """Saves end at 180, 380, 560: a request with tokens at steps 0..2 has TPOT (560 - 180) / 2; one of a single
    token has none; one cut by the window has none over it; ITL per step is the mean save-to-save time."""
    requests = RequestFacts.of([(0, 2, 3), (1, 2, 2), (2, 2, 1), (0, 1, 2)])
    m = path_metrics(OVERLAP, requests=requests)
    assert m.per_request.request.tolist() == [0, 1, 2, 3]
    assert m.per_request.tpot_ns.tolist()[:2] == [190.0, 180.0] and np.isnan(m.per_request.tpot_ns[2])
    assert m.per_request.tpot_ns[3] == 200.0
    assert m.tpot_ns.count == 3 and m.tpot_ns.mean == pytest.approx((190 + 180 + 200) / 3)
    windowed = path_metrics(OVERLAP, requests=requests, window=(1, 2))
    assert windowed.per_request.request.tolist() == [1, 2]  # requests 0 and 3 began before the window


def test_output_tokens_are_what_the_messages_carried():
    """A step whose message sent a preemption marker in a token's place emitted one token fewer than it produced."""
    facts = StepFacts.of([0, 1, 2], [4, 4, 4], emitted=[4, 3, 4])
    assert path_metrics(OVERLAP, facts).tokens == 11
    assert path_metrics(OVERLAP, StepFacts.of([0, 1, 2], [4, 4, 4], emitted=[-1, -1, -1])).tokens == 12


def test_without_gpu_timing_the_gpu_quantities_are_none_not_zero():
    m = path_metrics(SYNC, gpu_timed=False)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["measurable"] is False
    for key in GPU_FIELDS:
        assert d[key] is None, key
    assert all(v is None for v in d["per_step"]["bubble_ns"]) and all(v is None for v in d["per_step"]["hidden"])
    assert d["wall_ns"] == 400 and d["step_time_ns"]["mean"] == 200.0  # the host's own timing stays
