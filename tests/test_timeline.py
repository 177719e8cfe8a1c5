"""Trace Event Format export: structure, units, completeness, order and flows."""

from __future__ import annotations

import json

import pytest

from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from fdoverlap_cli.render.timeline import to_trace_events, write
from tests.loop_model import StepCosts
from tests.loop_model import spans as simulate

START = 7_000_000_123_457  # CLOCK_MONOTONIC-sized, with odd ns


@pytest.fixture(scope="module")
def paths():
    return {
        "sync": simulate("sync", 5, start_ns=START),
        "overlap": simulate("overlap", 5, StepCosts(copy_stream=True), start_ns=START + 10**9),
    }


def complete_events(trace, pid=None):
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and (pid is None or e["pid"] == pid)]


def test_one_process_per_path_and_one_thread_per_track(paths):
    trace = to_trace_events(paths, process_names={"overlap": "execute_model_overlap"})
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert processes == {1: "sync path", 2: "execute_model_overlap"}
    threads = {(e["pid"], e["args"]["name"]): e["tid"] for e in meta if e["name"] == "thread_name"}
    assert threads == {
        (1, Track.HOST): 1,
        (1, Track.COMPUTE_STREAM): 2,
        (2, Track.HOST): 1,
        (2, Track.COMPUTE_STREAM): 2,
        (2, Track.COPY_STREAM): 3,
    }
    assert trace["traceEvents"][: len(meta)] == meta  # metadata first


def test_every_span_appears_in_microseconds_with_its_step(paths):
    trace = to_trace_events(paths)
    for pid, (path, spans) in enumerate(paths.items(), start=1):
        t0 = min(s.start_ns for s in spans)
        assert trace["otherData"]["origin_ns"][path] == t0
        tid_of = {
            e["args"]["name"]: e["tid"]
            for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == pid
        }
        got = sorted(
            (e["name"], e["args"]["step"], round(e["ts"] * 1000), round(e["dur"] * 1000), e["tid"])
            for e in complete_events(trace, pid)
        )
        want = sorted((s.kind, s.step, s.start_ns - t0, s.duration_ns, tid_of[s.track]) for s in spans)
        assert got == want
    assert min(e["ts"] for e in complete_events(trace, 1)) == 0.0  # each path starts at 0 by default


def test_shared_origin_keeps_relative_times(paths):
    trace = to_trace_events(paths, origin="shared")
    assert set(trace["otherData"]["origin_ns"].values()) == {START}
    assert min(e["ts"] for e in complete_events(trace, 2)) == 10**6  # 1 s later, in µs


def test_ns_precision_survives_json():
    spans = [Span(Kind.SAVE, 0, START, START + 1), Span(Kind.SAVE, 1, START + 123_456_789_001, START + 123_456_790_003)]
    trace = json.loads(json.dumps(to_trace_events({"p": spans})))
    events = complete_events(trace)
    assert [(round(e["ts"] * 1000), round(e["dur"] * 1000)) for e in events] == [(0, 1), (123_456_789_001, 1_002)]
    assert events[1]["ts"] == 123_456_789.001


def test_events_are_sorted_with_enclosing_slices_first(paths):
    events = complete_events(to_trace_events(paths))
    keys = [(e["ts"], -e["dur"]) for e in events]
    assert keys == sorted(keys)
    first_host = [e for e in events if e["pid"] == 1 and e["tid"] == 1][:2]
    assert [e["name"] for e in first_host] == [Kind.ITERATION, Kind.INSERT]  # same start, the iteration encloses


def test_flows_join_a_launch_to_its_gpu_span(paths):
    spans = paths["overlap"]
    pre = [s for s in spans if s.kind == Kind.PREPROCESS]
    fwd = [s for s in spans if s.kind == Kind.COMPUTE][::2]  # the forward of each step
    trace = to_trace_events(paths, flows={"overlap": list(zip(pre, fwd, strict=True))})
    flow = [e for e in trace["traceEvents"] if e["ph"] in ("s", "f")]
    assert len(flow) == 2 * len(pre)
    t0 = trace["otherData"]["origin_ns"]["overlap"]
    by_id: dict[int, dict[str, dict]] = {}
    for e in flow:
        assert e["pid"] == 2 and e["cat"] == "launch"
        by_id.setdefault(e["id"], {})[e["ph"]] = e
    for (launch, gpu), pair in zip(zip(pre, fwd, strict=True), sorted(by_id.items()), strict=True):
        s, f = pair[1]["s"], pair[1]["f"]
        assert s["tid"] == 1 and f["tid"] == 2 and f["bp"] == "e"
        assert launch.start_ns < s["ts"] * 1000 + t0 < launch.end_ns  # inside the launch slice
        assert round(f["ts"] * 1000) + t0 == gpu.start_ns
        assert s["ts"] <= f["ts"]


def test_written_file_is_valid_json(tmp_path, paths):
    out = tmp_path / "timeline.json"
    write(out, {name: SpanTable.from_spans(spans) for name, spans in paths.items()}, metadata={"clock_error_ns": 40})
    trace = json.loads(out.read_text())
    assert trace["otherData"]["clock_error_ns"] == 40
    assert len(complete_events(trace)) == sum(len(s) for s in paths.values())
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_path_and_bad_origin():
    trace = to_trace_events({"sync": []})
    assert complete_events(trace) == [] and trace["otherData"]["origin_ns"] == {"sync": 0}
    with pytest.raises(ValueError, match="origin"):
        to_trace_events({"sync": []}, origin="epoch")
