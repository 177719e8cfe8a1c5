"""The run.json format checked in one pass before a RunResult is built from it, as trace/format.py checks a trace.

Every field `RunResult`/`PathRecord` read and every field a renderer shows gets its type and range checked;
the first problem is one InputError naming its JSON path (`paths.sync.columns.pre_start[3]`). Step-table
times must come out, after their time base and reference are added, within [0, 2^62] ns (int64 with room
to subtract); counts and ids are integers within ±2^62; the step column is there, increasing, and every
column of a table has its length. Free-form parts (the environment's paddle record, the trace's config
and meta, the options) only need to be objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fdoverlap_cli.errors import InputError, clip
from fdoverlap_cli.json_doc import MAX_VALUE, describe, key_path
from fdoverlap_cli.json_doc import Doc as D
from fdoverlap_cli.measure import schema
from fdoverlap_cli.measure.records import Track

STEP_COLUMNS = (*schema.HOST_COLUMNS, *schema.GPU_POINTS)
COLUMNS = (*STEP_COLUMNS, *schema.WAIT_COLUMNS)
COPY_TRACKS = (Track.COMPUTE_STREAM, Track.COPY_STREAM)
# run.json stores a row's times relative to its pre_start (set when the row is made, so always there),
# a wait's end relative to its start, and those two relative to the file's time base: a few digits a
# value instead of twelve. Missing values are null.
TIME_REFERENCE = {c: "pre_start" for c in schema.TIME_COLUMNS if c not in ("pre_start", "wait_start", "wait_end")}
TIME_REFERENCE["wait_end"] = "wait_start"


def check_results(doc: dict[str, Any]) -> None:
    """Raise InputError(json_path, reason) for the first field of a run.json (format and version already
    checked) that RunResult.from_dict or a renderer could not use."""
    D.bool(doc, "complete", "")
    D.str(doc, "created", "")
    D.strings(doc, "command", "")
    environment = D.object(D.field(doc, "environment", ""), "environment")
    D.str(environment, "device", "environment")
    if environment.get("paddle") is not None:
        D.object(environment["paddle"], "environment.paddle")
    if environment.get("kernels") is not None:  # run.json files from before it have none
        kernels = D.object(environment["kernels"], "environment.kernels")
        for name in kernels:
            D.str(kernels, name, "environment.kernels")
    trace = D.object(D.field(doc, "trace", ""), "trace")
    D.str(trace, "file", "trace")
    D.str(trace, "sha256", "trace", nullable=True)
    D.int(trace, "requests", "trace")
    D.int(trace, "steps", "trace")
    model = D.object(D.field(doc, "model", ""), "model")
    D.str(model, "name", "model")
    D.int(model, "num_layers", "model")
    D.str(model, "dtype", "model")
    _options(D.object(D.field(doc, "options", ""), "options"))
    _window(D.field(doc, "window", ""))
    graphs = D.optional(doc, "cuda_graphs", "")
    if graphs is not None:
        _graphs(graphs)
    if doc.get("eager_warmup") is not None:  # absent from a run.json written before the eager warm-up
        _eager_warmup(D.object(doc["eager_warmup"], "eager_warmup"))
    identity = D.optional(doc, "identity", "")
    if identity is not None:
        _identity(identity)
    D.strings(doc, "notes", "")
    paths = D.object(D.field(doc, "paths", ""), "paths")
    for name, path in paths.items():
        if name not in schema.PATHS:
            raise InputError(key_path("paths", name), f"unknown path (expected {' or '.join(schema.PATHS)})")
        _path(D.object(path, f"paths.{name}"), name)
    tp = doc.get("tensor_parallel")  # absent in files written before --tp
    if tp is not None:
        _tensor_parallel(D.object(tp, "tensor_parallel"))


def _tensor_parallel(tp: dict[str, Any]) -> None:
    where = "tensor_parallel"
    D.int(tp, "size", where, minimum=1)
    D.str(tp, "backend", where)
    for i, rank in enumerate(D.list(tp, "ranks", where)):
        at = f"{where}.ranks[{i}]"
        rank = D.object(rank, at)
        D.int(rank, "rank", at)
        D.int(rank, "pid", at)
        D.str(rank, "device", at, nullable=True)
        sent = D.object(D.field(rank, "messages_sent", at), f"{at}.messages_sent")
        for path in sent:
            D.int(sent, path, f"{at}.messages_sent")
        tokens = D.object(D.field(rank, "tokens", at), f"{at}.tokens")
        for path, digests in tokens.items():
            digests = D.object(digests, key_path(f"{at}.tokens", path))
            for request in digests:
                D.str(digests, request, key_path(f"{at}.tokens", path))
        paths = D.object(D.field(rank, "paths", at), f"{at}.paths")
        for name, path in paths.items():
            if name not in schema.PATHS:
                raise InputError(key_path(f"{at}.paths", name), f"unknown path (expected {' or '.join(schema.PATHS)})")
            _path(D.object(path, f"{at}.paths.{name}"), name, f"{at}.paths.{name}")


def _options(options: dict[str, Any]) -> None:
    """Free-form but for what the renderers read: the runner's design and the output path (absent in files
    written before there were two of each: pr6176 and msgqueue)."""
    from fdoverlap_cli.engine.designs import DESIGNS
    from fdoverlap_cli.engine.output_ipc import OUTPUT_IPCS

    runner = options.get("runner")
    if runner is not None:
        runner = D.object(runner, "options.runner")
        if "design" in runner and runner["design"] not in DESIGNS:
            raise InputError(
                "options.runner.design", f"expected {' or '.join(DESIGNS)}, got {describe(runner['design'])}"
            )
    if "output_ipc" in options and options["output_ipc"] not in OUTPUT_IPCS:
        raise InputError(
            "options.output_ipc", f"expected {' or '.join(OUTPUT_IPCS)}, got {describe(options['output_ipc'])}"
        )


def _window(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) != 2:
        raise InputError("window", f"expected null or [FIRST, LAST], got {describe(value)}")
    first, last = (D.int_value(v, f"window[{i}]", minimum=0) for i, v in enumerate(value))
    if first > last:  # type: ignore[operator]
        raise InputError("window", f"FIRST {first} is after LAST {last}")


def _graphs(graphs: dict[str, Any]) -> None:
    where = "cuda_graphs"
    for i, size in enumerate(D.list(graphs, "sizes", where)):
        D.int_value(size, f"{where}.sizes[{i}]", minimum=1)
    for key in ("capture_ns", "allocated_before", "allocated_after", "reserved_before", "reserved_after"):
        D.int(graphs, key, where)
    known = {"sizes", "capture_ns", "allocated_before", "allocated_after", "reserved_before", "reserved_after"}
    for key in graphs:
        if key not in known | {"memory_bytes"}:
            raise InputError(key_path(where, key), "unknown field")


def _eager_warmup(warmup: dict[str, Any]) -> None:
    where = "eager_warmup"
    for i, count in enumerate(D.list(warmup, "token_counts", where)):
        D.int_value(count, f"{where}.token_counts[{i}]", minimum=1)
    D.int(warmup, "warmup_ns", where)
    for key in warmup:
        if key not in {"token_counts", "warmup_ns"}:
            raise InputError(key_path(where, key), "unknown field")


def _identity(identity: dict[str, Any]) -> None:
    where = "identity"
    identical = D.bool(identity, "identical", where)
    D.int(identity, "requests", where)
    D.int(identity, "tokens", where)
    first = D.optional(identity, "first_difference", where)
    if not identical and first is None:
        raise InputError(f"{where}.first_difference", "the paths' tokens differ, so it must say where")
    if first is not None:
        at = f"{where}.first_difference"
        D.str(first, "request", at)
        D.int(first, "token_index", at)
        D.int(first, "step", at, minimum=-1)


def _path(path: dict[str, Any], name: str, where: str | None = None) -> None:
    where = where or f"paths.{name}"
    if D.str(path, "name", where) != name:
        raise InputError(f"{where}.name", f"expected '{name}', the path's key, got {describe(path['name'])}")
    D.bool(path, "complete", where)
    if D.str(path, "copy_track", where) not in COPY_TRACKS:
        raise InputError(
            f"{where}.copy_track", f"expected {' or '.join(COPY_TRACKS)}, got {describe(path['copy_track'])}"
        )
    base = D.int(path, "time_base_ns", where)
    _columns(D.object(D.field(path, "columns", where), f"{where}.columns"), base or 0, f"{where}.columns")
    tokens = D.object(D.field(path, "tokens", where), f"{where}.tokens")
    for request, digest in tokens.items():
        at = key_path(f"{where}.tokens", request)
        digest = D.object(digest, at)
        D.int(digest, "count", at)
        D.str(digest, "sha256", at)
    reader = D.optional(path, "reader", where)
    if reader is not None:
        _reader(reader, f"{where}.reader")
    D.int(path, "queue_full_waits", where)
    clock = D.optional(path, "clock", where)
    if clock is not None:
        at = f"{where}.clock"
        for key in ("offset_ns", "error_ns", "drift_ns"):
            D.int(clock, key, at, minimum=-MAX_VALUE)
        D.int(clock, "samples", at)
        D.int(clock, "resolution_ns", at, nullable=True)


def _reader(reader: dict[str, Any], where: str) -> None:
    for key in ("messages", "stop_messages", "anomaly_count"):
        D.int(reader, key, where)
    for i, marker in enumerate(D.list(reader, "markers", where)):
        if not isinstance(marker, list):
            raise InputError(f"{where}.markers[{i}]", f"expected an array, got {describe(marker)}")
    D.strings(reader, "anomalies", where)
    at = f"{where}.output_check"
    check = D.object(D.field(reader, "output_check", where), at)
    ok = D.bool(check, "ok", at)
    D.strings(check, "problems", at)
    if not ok and not check["problems"]:
        raise InputError(f"{at}.problems", "the check failed, so it must name a problem")


def _columns(columns: dict[str, Any], base: int, where: str) -> None:
    """Types, lengths and ranges of a step table as PathRecord.to_dict wrote it (times as offsets)."""
    for name in columns:
        if name not in COLUMNS:
            raise InputError(key_path(where, name), "unknown step-table column")
    if "step" not in columns:
        raise InputError(where, "missing required column 'step'")
    for _, start, end, _ in (*schema.STEP_SPANS, schema.WAIT_SPAN):  # a span needs both ends
        for have, lack in ((start, end), (end, start)):
            if have in columns and lack not in columns:
                raise InputError(where, f"has column '{have}' but not '{lack}'")
    if ("wait_start" in columns) != ("wait_step" in columns):
        raise InputError(where, "the wait columns come together (wait_step, wait_start, wait_end)")
    lists = {name: D.list(columns, name, where) for name in columns}
    for group, first in ((STEP_COLUMNS, "step"), (schema.WAIT_COLUMNS, None)):
        present = [name for name in group if name in lists]
        first = first or (present[0] if present else None)
        for name in present:
            if len(lists[name]) != len(lists[first]):
                raise InputError(
                    key_path(where, name), f"has {len(lists[name]):,} rows, '{first}' has {len(lists[first]):,}"
                )
    absolute: dict[str, list[int | None]] = {}
    for name in sorted(lists, key=lambda c: c in TIME_REFERENCE):  # references first, as PathRecord reads them
        at = key_path(where, name)
        if name in schema.TIME_COLUMNS:
            refs = absolute.get(TIME_REFERENCE[name]) if name in TIME_REFERENCE else None
            absolute[name] = list(_times(lists[name], refs, base, at, TIME_REFERENCE.get(name)))
        else:
            minimum = 0 if name in ("step", "wait_step") else -1
            for i, value in enumerate(lists[name]):
                D.int_value(value, f"{at}[{i}]", minimum=minimum)
    steps = lists["step"]
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise InputError(f"{where}.step[{i}]", f"steps must increase, got {steps[i]} after {steps[i - 1]}")


def _times(
    values: list[Any], refs: list[int | None] | None, base: int, where: str, ref_name: str | None
) -> Iterable[int | None]:
    for i, offset in enumerate(values):
        at = f"{where}[{i}]"
        if offset is None:
            yield None
            continue
        D.int_value(offset, at)
        origin = base
        if ref_name is not None:
            origin = refs[i] if refs is not None and i < len(refs) else None  # type: ignore[assignment]
            if origin is None:
                raise InputError(at, f"a time relative to {ref_name}, which this row lacks")
        value = origin + offset
        if not 0 <= value <= MAX_VALUE:
            raise InputError(at, f"the time {clip(str(value))} ns is outside [0, 2^62] (time base and offsets)")
        yield value


# --------------------------------------------------------------------------- a sweep's file (sweep/record.py)

POINT_STATUSES = ("done", "pending", "incomplete", "failed")


def check_sweep(doc: dict[str, Any]) -> None:
    """Raise InputError(json_path, reason) for the first field of a sweep file (format and version already
    checked) that SweepResult.from_dict or a renderer could not use; each point's run is a run.json, checked
    by check_results when it is loaded."""
    D.bool(doc, "complete", "")
    D.str(doc, "created", "")
    D.strings(doc, "command", "")
    axes = D.list(doc, "axes", "")
    if not axes:
        raise InputError("axes", "a sweep has at least one axis (batch or trace)")
    names = []
    for i, axis in enumerate(axes):
        at = f"axes[{i}]"
        names.append(D.str(D.object(axis, at), "name", at))
        if not D.list(axis, "values", at):
            raise InputError(f"{at}.values", "an axis has at least one value")
    if len(set(names)) != len(names):
        raise InputError("axes", "an axis is named twice")
    ids = set()
    for i, point in enumerate(D.list(doc, "points", "")):
        at = f"points[{i}]"
        point = D.object(point, at)
        ids.add(D.str(point, "id", at))
        key = D.object(D.field(point, "key", at), f"{at}.key")
        if list(key) != names:
            raise InputError(f"{at}.key", f"expected the axes {', '.join(names)} in order, got {', '.join(key)}")
        D.str(point, "label", at)
        status = D.str(point, "status", at)
        if status not in POINT_STATUSES:
            raise InputError(f"{at}.status", f"expected one of {', '.join(POINT_STATUSES)}, got {describe(status)}")
        D.str(point, "error", at, nullable=True)
        run = D.optional(point, "run", at)
        if status == "done" and (run is None or run.get("complete") is not True):
            raise InputError(f"{at}.run", "a done point holds a complete run")
    if len(ids) != len(doc["points"]):
        raise InputError("points", "two points have the same id")
