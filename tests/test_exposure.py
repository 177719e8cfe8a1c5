"""Exposed host time: the bubble split by what the host did, the same from the tool's step table and from nsys.

The rule (measure/exposure.py): each instant of a bubble goes to the innermost host span covering it (the one
that started last; a tie to the one that ends first, then a wait over a stage over the iteration); the
iteration outside every stage, and time no host span covers, are `other`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.measure import catalog, schema
from fdoverlap_cli.measure.exposure import CATEGORIES, exposed_by_category
from fdoverlap_cli.measure.metrics import path_metrics
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from fdoverlap_cli.nsys.analysis import analyze
from fdoverlap_cli.results import RunResult, step_spans
from tests.loop_model import ENGINE, StepCosts, costs_strategy, step_table, write_export, write_results
from tests.loop_model import spans as simulate

TRACE_SHA = "5" * 64


def _split(bubbles, spans) -> dict[str, list[int]]:
    """Each category's ns per bubble, for the categories that have any."""
    out = exposed_by_category(np.asarray(bubbles, np.int64).reshape(-1, 2), SpanTable.from_spans(spans))
    return {c: out[:, j].tolist() for j, c in enumerate(CATEGORIES) if out[:, j].any()}


def host(kind, a, b, step=0):
    return Span(kind, step, a, b, Track.HOST)


# --------------------------------------------------------------------------- the rule, by hand


def test_nested_spans_go_to_the_innermost_and_waits_are_split_out():
    spans = [
        host(Kind.ITERATION, 0, 100),
        host(Kind.SAVE, 10, 50),
        host(Kind.EVENT_WAIT, 10, 20),  # starts with the save: the tie goes to the one that ends first
        host(Kind.INSERT, 60, 70),
        host(Kind.PREPROCESS, 70, 95),
        host(Kind.READBACK, 75, 80),
    ]
    assert _split([(15, 98)], spans) == {
        "event_wait": [5],
        "save": [30],
        "insert": [10],
        "preprocess": [20],
        "readback": [5],
        "other": [10 + 3],  # the iteration between save and insert, and after preprocess
    }


def test_overlapping_spans_go_to_the_one_started_last():
    spans = [host(Kind.POSTPROCESS, 0, 50), host(Kind.SAVE, 30, 80)]  # not nested
    assert _split([(0, 100)], spans) == {"postprocess": [30], "save": [50], "other": [20]}


def test_spans_of_the_same_interval_go_to_the_wait_then_the_stage():
    assert _split([(0, 10)], [host(Kind.ITERATION, 0, 10), host(Kind.SAVE, 0, 10)]) == {"save": [10]}
    assert _split([(0, 10)], [host(Kind.SAVE, 0, 10), host(Kind.BACKPRESSURE, 0, 10)]) == {"backpressure": [10]}


def test_uncovered_time_and_a_bubble_with_no_host_span_are_other():
    assert _split([(0, 10), (20, 30)], [host(Kind.SAVE, 5, 25)]) == {"save": [5, 5], "other": [5, 5]}
    assert _split([(0, 10)], []) == {"other": [10]}


def test_no_bubble():
    spans = [host(Kind.SAVE, 0, 10)]
    assert _split([(5, 5), (9, 3)], spans) == {}  # empty (and reversed) bubbles get nothing
    assert exposed_by_category(np.empty((0, 2), np.int64), SpanTable.from_spans(spans)).shape == (0, len(CATEGORIES))


def test_a_span_over_several_bubbles_counts_in_each():
    assert _split([(0, 10), (20, 30), (40, 45)], [host(Kind.SAVE, 5, 42)]) == {"save": [5, 10, 2], "other": [5, 0, 3]}


def test_a_path_with_no_bubble_exposes_nothing():
    """A GPU-bound overlap run: C_{k+1} starts before step k's device work ends, every category is 0."""
    m = path_metrics(simulate("overlap", 30, StepCosts(forward=400_000)))
    assert m.bubble_total_ns == 0 and all(t.total_ns == 0 for t in m.exposed.values())
    assert m.exposed_share == 0.0


# --------------------------------------------------------------------------- the sum property on step tables


costs = costs_strategy(
    (2, 10),
    300_000,
    readback_every=st.integers(0, 3),
    sync_ns=st.integers(0, 5_000),
    loop_ns=st.integers(0, 5_000),
    copy_stream=st.booleans(),
)


@settings(max_examples=120, deadline=None)
@given(costs, st.sampled_from(schema.PATHS))
def test_per_step_the_categories_sum_to_the_bubble(n_and_costs, path):
    n, costs = n_and_costs
    spans = simulate(path, n, costs, start_ns=10**12)
    # Through the engine's step table (as run.json holds it), as `compare` and `report` read it.
    table = step_spans(step_table(spans), Track.COPY_STREAM if costs.copy_stream else Track.COMPUTE_STREAM)
    for m in (path_metrics(spans), path_metrics(table)):
        bubble = m.per_step.bubble_ns
        total = sum(m.per_step.exposed_ns[c] for c in CATEGORIES)
        defined = ~np.isnan(bubble)
        np.testing.assert_array_equal(total[defined], bubble[defined])
        assert np.isnan(total[~defined]).all()
        assert sum(t.total_ns for t in m.exposed.values()) == m.bubble_total_ns
        assert all(t.total_ns >= 0 for t in m.exposed.values())


def test_the_tool_and_the_model_split_a_step_table_alike():
    spans = simulate("sync", 12, dataclasses.replace(ENGINE, copies=1))
    direct = path_metrics(spans)
    tabled = path_metrics(step_spans(step_table(spans), Track.COMPUTE_STREAM))
    assert {c: t.total_ns for c, t in direct.exposed.items()} == {c: t.total_ns for c, t in tabled.exposed.items()}
    assert direct.exposed["readback"].total_ns > 0 and direct.exposed["save"].total_ns > 0


# --------------------------------------------------------------------------- both sources, one definition


@pytest.mark.parametrize(
    "costs",
    [ENGINE, dataclasses.replace(ENGINE, copy_stream=True), dataclasses.replace(ENGINE, readback_every=1)],
    ids=["engine", "copy-stream", "readback-every-step"],
)
def test_nsys_and_the_step_table_give_the_same_split(tmp_path, costs):
    """The export and the tool's run.json of the same simulated run: per path, per category, the same ns."""
    expected = write_export(tmp_path / "run.sqlite", 8, costs, trace_sha256=TRACE_SHA)
    nsys = analyze(tmp_path / "run.sqlite").paths
    tool = RunResult.load(write_results(expected, tmp_path / "run.json", trace_sha256=TRACE_SHA)).view(None).paths
    for path in schema.PATHS:
        ours, theirs = tool[path], nsys[path].metrics
        split = {c: t.total_ns for c, t in ours.exposed.items()}
        assert split == {c: t.total_ns for c, t in theirs.exposed.items()}, path
        assert sum(split.values()) == ours.bubble_total_ns == theirs.bubble_total_ns > 0, path
    sync = {c: t.total_ns for c, t in tool["sync"].exposed.items() if t.total_ns}
    assert {"insert", "preprocess", "save", "event_wait"} <= sync.keys()  # what a sync step's bubble is made of


def test_the_cross_check_has_a_row_per_exposed_category(tmp_path):
    from fdoverlap_cli.nsys.crosscheck import cross_check

    expected = write_export(tmp_path / "run.sqlite", 8, ENGINE, trace_sha256=TRACE_SHA)
    run_json = write_results(expected, tmp_path / "run.json", trace_sha256=TRACE_SHA)
    check = cross_check(analyze(tmp_path / "run.sqlite"), RunResult.load(run_json), str(run_json))
    exposed = [r for r in check.rows if r.quantity.startswith("exposed.")]
    assert {r.quantity for r in exposed if r.path == "sync"} >= {"exposed.save.mean_ns", "exposed.readback.mean_ns"}
    assert all(r.agrees and r.difference == 0 for r in exposed)


@pytest.mark.parametrize(
    ("tool_us", "nsys_us", "agrees"),
    [(100, 115, True), (100, 125, False), (500, 545, True), (500, 560, False), (0, 19, True)],
)
def test_an_exposed_category_agrees_within_10_percent_or_20_us(tool_us, nsys_us, agrees):
    from fdoverlap_cli.nsys.crosscheck import EXPOSED_FLOOR_NS, EXPOSED_TARGET, Agreement

    a, b = tool_us * 1000.0, nsys_us * 1000.0
    row = Agreement("sync", "exposed.save.mean_ns", a, b, b - a, "time", EXPOSED_TARGET, EXPOSED_FLOOR_NS)
    assert row.agrees is agrees


# --------------------------------------------------------------------------- a new stage plugs in through the schema


def test_every_host_kind_has_an_exposed_category_and_a_catalog_row():
    categories = {c for c, _ in schema.EXPOSED}
    for kind in Kind.HOST:
        assert schema.EXPOSED_AS.get(kind, kind) in categories, kind
    assert set(CATEGORIES) == categories
    keys = {m.key for m in catalog.PATH_METRICS}
    assert {f"exposed.{c}.mean_ns" for c in categories} <= keys
    assert set(schema.WAIT_KINDS) == set(Kind.WAITS) and set(schema.STAGE_WAITS.values()) <= set(Kind.WAITS)
