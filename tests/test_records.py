"""SpanTable: the columnar form of Spans round-trips and selects by kind."""

from __future__ import annotations

import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from tests.loop_model import StepCosts
from tests.loop_model import spans as simulate


def test_from_spans_round_trips():
    spans = simulate("overlap", 6, StepCosts(copy_stream=True), start_ns=10**15)
    table = SpanTable.from_spans(spans)
    assert len(table) == len(spans)
    assert table.to_spans() == spans
    assert set(table.track_names) == {Track.HOST, Track.COMPUTE_STREAM, Track.COPY_STREAM}


def test_of_kind_and_intervals():
    table = SpanTable.from_spans(
        [Span(Kind.SAVE, 0, 5, 9), Span(Kind.COMPUTE, 0, 1, 4, Track.COMPUTE_STREAM), Span(Kind.SAVE, 1, 10, 12)]
    )
    saves = table.of_kind(Kind.SAVE)
    assert saves.intervals().tolist() == [[5, 9], [10, 12]]
    assert saves.step.tolist() == [0, 1]
    assert len(table.of_kind(Kind.COPY)) == 0


def test_empty_and_bad_input():
    assert len(SpanTable.from_spans([])) == 0
    with pytest.raises(InputError, match="unknown span kind"):
        SpanTable.from_spans([Span("kernel", 0, 0, 1)])
    with pytest.raises(InputError, match="end before they start"):
        SpanTable.from_spans([Span(Kind.SAVE, 0, 3, 2)])
