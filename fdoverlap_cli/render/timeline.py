"""Spans as a Chrome/Perfetto trace (Trace Event Format JSON): opens in ui.perfetto.dev and chrome://tracing.

One process per path ("sync", "overlap"), one thread per `Span.track` (the host thread first, then
the GPU streams). Each span is a complete event (`ph: "X"`, `ts`/`dur` in µs with the ns kept as
three decimals) named by its kind, with its step in `args`. Optional flow arrows (`ph: "s"` → `"f"`)
join a host span that launched GPU work to that GPU span.

By default every path's clock starts at 0 at its first span, so the paths line up for comparison;
`origin="shared"` keeps one origin for all (the earliest span) when their absolute times matter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from fdoverlap_cli.fileio import write_json
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track

TRACK_ORDER = (Track.HOST, Track.COMPUTE_STREAM, Track.COPY_STREAM)  # other tracks follow, by name
ORIGINS = ("path", "shared")


def _us(ns: int) -> float:
    """ns -> µs; the result's decimal form keeps every ns."""
    return ns / 1000


def _thread_ids(spans: Sequence[Span], flows: Sequence[tuple[Span, Span]]) -> dict[str, int]:
    names = {s.track for s in spans} | {s.track for pair in flows for s in pair}
    ordered = [t for t in TRACK_ORDER if t in names] + sorted(names - set(TRACK_ORDER))
    return {name: tid for tid, name in enumerate(ordered, start=1)}


def _metadata(event: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "M", "name": event, "pid": pid, "tid": tid, "args": args}


def to_trace_events(
    tracks: Mapping[str, Sequence[Span] | SpanTable],
    flows: Mapping[str, Sequence[tuple[Span, Span]]] | None = None,
    process_names: Mapping[str, str] | None = None,
    *,
    origin: str = "path",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The trace of `tracks` (path name -> its spans, or their table) as a Trace Event Format object.

    `flows` maps a path to (launch span, GPU span) pairs drawn as arrows; `process_names` overrides a
    path's displayed name; `metadata` goes into `otherData` beside the time origins.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    flows = flows or {}
    process_names = process_names or {}
    tracks = {path: s.to_spans() if isinstance(s, SpanTable) else s for path, s in tracks.items()}
    starts = {path: min((s.start_ns for s in spans), default=0) for path, spans in tracks.items()}
    shared_origin = min(starts.values(), default=0)

    meta: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    origins: dict[str, int] = {}
    flow_id = 0
    for pid, (path, spans) in enumerate(tracks.items(), start=1):
        t0 = origins[path] = starts[path] if origin == "path" else shared_origin
        path_flows = flows.get(path, ())
        tids = _thread_ids(spans, path_flows)
        meta.append(_metadata("process_name", pid, 0, {"name": process_names.get(path, f"{path} path")}))
        meta.append(_metadata("process_sort_index", pid, 0, {"sort_index": pid}))
        for track, tid in tids.items():
            meta.append(_metadata("thread_name", pid, tid, {"name": track}))
            meta.append(_metadata("thread_sort_index", pid, tid, {"sort_index": tid}))
        for s in spans:
            events.append(
                {
                    "name": s.kind,
                    "cat": "gpu" if s.kind in Kind.GPU else "host",
                    "ph": "X",
                    "ts": _us(s.start_ns - t0),
                    "dur": _us(s.end_ns - s.start_ns),
                    "pid": pid,
                    "tid": tids[s.track],
                    "args": {"step": s.step},
                }
            )
        for launch, gpu in path_flows:
            flow_id += 1
            common = {"name": "launch", "cat": "launch", "id": flow_id, "pid": pid}
            # The start binds to the slice enclosing its ts (the launch span's middle, never a boundary);
            # the finish (bp "e") to the GPU span it starts.
            mid = launch.start_ns + (launch.end_ns - launch.start_ns) // 2
            events.append({**common, "ph": "s", "ts": _us(mid - t0), "tid": tids[launch.track]})
            events.append({**common, "ph": "f", "bp": "e", "ts": _us(gpu.start_ns - t0), "tid": tids[gpu.track]})

    # Sorted by time; at one ts the longer (enclosing) slice first, so nested slices stack correctly.
    events.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ns",
        "otherData": {"time_origin": origin, "origin_ns": origins, **(metadata or {})},
    }


def write(
    file: str | os.PathLike[str],
    tracks: Mapping[str, Sequence[Span] | SpanTable],
    flows: Mapping[str, Sequence[tuple[Span, Span]]] | None = None,
    process_names: Mapping[str, str] | None = None,
    **options: Any,
) -> None:
    """Write the trace of `tracks` to `file` atomically (see `to_trace_events` for the arguments)."""
    write_json(file, to_trace_events(tracks, flows, process_names, **options))
