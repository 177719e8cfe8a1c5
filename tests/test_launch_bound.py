"""Launch-bound steps: the GPU ending the forward before the host ends the stage that launched it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fdoverlap_cli.measure.derive import PathTiming, derive
from fdoverlap_cli.measure.metrics import path_metrics
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from fdoverlap_cli.results import RunResult
from tests.conftest import REPO

RUNS = REPO / "tests" / "fixtures" / "runs"


def _step(k: int, t0: int, launch_end: int, forward_end: int) -> list[Span]:
    """Step k: the host launches the forward in [t0, launch_end); the GPU runs it, then postprocess."""
    return [
        Span(Kind.ITERATION, k, t0, forward_end + 40),
        Span(Kind.PREPROCESS, k, t0, launch_end),
        Span(Kind.COMPUTE, k, t0 + 5, forward_end, Track.COMPUTE_STREAM),
        Span(Kind.POSTPROCESS, k, forward_end + 1, forward_end + 20),
        Span(Kind.COMPUTE, k, forward_end + 2, forward_end + 30, Track.COMPUTE_STREAM),
        Span(Kind.SAVE, k, forward_end + 30, forward_end + 40),
    ]


# Step 0 is GPU-bound (the forward ends 200 ns after its launch did), steps 1 and 2 are launch-bound
# (the GPU ended 1 and 0 ns before / at the stage's end): the step's timestamps are exact integers.
SPANS = [*_step(0, 0, 100, 300), *_step(1, 400, 600, 599), *_step(2, 700, 800, 800)]


def test_launch_slack_and_the_launch_bound_share_on_known_steps():
    m = path_metrics(SPANS)
    assert m.per_step.launch_slack_ns.tolist() == [200.0, -1.0, 0.0]
    assert m.launch_bound == pytest.approx(2 / 3)


def test_the_slack_of_the_real_clock_is_exact():
    # the engine's clock is CLOCK_MONOTONIC aligned to ~1.8e18 ns on some hosts: float64 would lose the ns
    base = 1_796_276_023_948_551_008
    m = path_metrics([Span(s.kind, s.step, s.start_ns + base, s.end_ns + base, s.track) for s in SPANS])
    assert m.per_step.launch_slack_ns.tolist() == [200.0, -1.0, 0.0]


def test_a_step_without_its_launch_stage_has_no_slack():
    m = path_metrics([s for s in SPANS if not (s.kind == Kind.PREPROCESS and s.step == 1)])
    slack = m.per_step.launch_slack_ns.tolist()
    assert slack[0] == 200.0 and math.isnan(slack[1]) and slack[2] == 0.0
    assert m.launch_bound == pytest.approx(1 / 2)


def test_without_gpu_timing_there_is_no_launch_bound_share():
    m = path_metrics(SPANS, gpu_timed=False)
    assert m.launch_bound is None


def test_a_mostly_launch_bound_path_gets_one_note_naming_it():
    bound = PathTiming(SpanTable.from_spans(SPANS))
    gpu_bound = PathTiming(
        SpanTable.from_spans([*_step(0, 0, 100, 300), *_step(1, 400, 500, 900), *_step(2, 950, 990, 1200)])
    )
    notes = derive({"sync": gpu_bound, "overlap": bound}).notes
    launch = [n for n in notes if "launch-bound" in n]
    assert len(launch) == 1 and "66.7% of overlap's" in launch[0] and "sync" not in launch[0]
    assert not any("launch-bound" in n for n in derive({"sync": gpu_bound}).notes)


def test_a_real_run_on_a_slow_host_is_said_to_be_launch_bound():
    view = RunResult.load(RUNS / "h200-default-graphs-off-slow-host.json").view(None)
    for name in ("sync", "overlap"):
        assert view.paths[name].launch_bound > 0.9, name
    (note,) = [n for n in view.notes if "launch-bound" in n]
    assert "of sync's and" in note and "CUDA graphs take" in note


def test_the_same_run_on_a_fast_host_is_not():
    view = RunResult.load(RUNS / "h200-default-graphs-off.json").view(None)
    for name in ("sync", "overlap"):
        assert view.paths[name].launch_bound < 0.05, name
        assert np.nanmin(view.paths[name].per_step.launch_slack_ns) > 0, name
    assert not any("launch-bound" in n for n in view.notes)
