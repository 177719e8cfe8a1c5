"""Fuzzing `fdoverlap trace validate` with random mutations of a valid trace.

Whatever the mutation (a field changed, deleted or given another type, a number nudged, steps or
inserts swapped, duplicated or deleted, the text cut short), the command exits 0 and `load_trace`
accepts the file, or it exits 2 with one line; never another code, never an escaping exception.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fdoverlap_cli.cli import main
from fdoverlap_cli.trace import load_trace
from fdoverlap_cli.trace.format import trace_to_dict
from fdoverlap_cli.trace.scheduler import SchedulerOptions
from fdoverlap_cli.trace.synth import LengthDist, SynthSpec, synth_trace


def _valid_doc() -> dict[str, Any]:
    """5 requests in 3 slots, with chunked prefills, idle steps and one preemption (23 steps)."""
    spec = SynthSpec(
        requests=5,
        prompt_len=LengthDist("uniform", 4, 20),
        output_len=LengthDist("uniform", 2, 6),
        arrival_rate=0.5,
        seed=3,
        scheduler=SchedulerOptions(max_num_seqs=3, block_size=4, num_kv_blocks=8, max_num_batched_tokens=8),
    )
    doc = trace_to_dict(synth_trace(spec))
    doc["meta"] = {}  # free-form: mutating it tests nothing
    return doc


VALID = _valid_doc()

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=40)
    | st.integers()
    | st.sampled_from([2**62, 2**62 + 1, 2**63, -(2**63), 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def _nodes(doc: Any, path: tuple = ()) -> list[tuple]:
    """The path of every value inside `doc` (dict keys and list indices), root excluded."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*path, key))
        found.extend(_nodes(value, (*path, key)))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    """Apply one random mutation to `doc` in place."""
    kind = data.draw(st.sampled_from(["set", "delete", "nudge", "steps", "inserts", "add-key"]), label="kind")
    nodes = _nodes(doc)
    if kind == "steps" and isinstance(doc.get("steps"), list) and doc["steps"]:
        _reorder(doc["steps"], data)
    elif kind == "inserts":
        lists = [p for p in nodes if p[-1] in ("insert", "preempt") and isinstance(_parent(doc, p)[p[-1]], list)]
        if lists:
            path = data.draw(st.sampled_from(lists), label="list")
            _reorder(_parent(doc, path)[path[-1]], data)
    elif kind == "add-key":
        objects = [p for p in nodes if isinstance(_parent(doc, p)[p[-1]], dict)]
        if objects:
            path = data.draw(st.sampled_from(objects), label="object")
            key = data.draw(st.sampled_from(["slot", "len", "start", "request", "id", "extra", "preempt"]))
            _parent(doc, path)[path[-1]][key] = data.draw(JSON_VALUES, label="value")
    elif nodes:
        path = data.draw(st.sampled_from(nodes), label="path")
        parent, key = _parent(doc, path), path[-1]
        if kind == "set":
            parent[key] = data.draw(JSON_VALUES, label="value")
        elif kind == "delete":
            del parent[key]
        elif isinstance(parent[key], int) and not isinstance(parent[key], bool):
            delta = data.draw(st.sampled_from([-1, 1, -2, 2, 7]), label="delta")
            parent[key] = parent[key] * 2 if delta == 7 else parent[key] + delta


def _reorder(items: list, data: st.DataObject) -> None:
    """Swap, duplicate or delete elements of `items`."""
    if not items:
        return
    i = data.draw(st.integers(0, len(items) - 1), label="i")
    j = data.draw(st.integers(0, len(items) - 1), label="j")
    how = data.draw(st.sampled_from(["swap", "duplicate", "delete"]), label="how")
    if how == "swap":
        items[i], items[j] = items[j], items[i]
    elif how == "duplicate":
        items.insert(j, copy.deepcopy(items[i]))
    else:
        del items[i]


def _text(doc: dict[str, Any], data: st.DataObject) -> str:
    text = json.dumps(doc, indent=1)
    if data.draw(st.integers(0, 9), label="truncate?") == 0:
        text = text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    return text


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "trace.json"


def _validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["trace", "validate", str(path)])
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    return code, out.getvalue(), err.getvalue()


def test_the_unmutated_trace_is_valid(trace_file: Path) -> None:
    trace_file.write_text(json.dumps(VALID))
    assert _validate(trace_file) == (0, "ok: 5 requests, 23 steps\n", "")


@settings(
    max_examples=400,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_traces_exit_0_or_2_with_one_line(trace_file: Path, data: st.DataObject) -> None:
    doc = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _mutate(doc, data)
    trace_file.write_text(_text(doc, data))
    code, out, err = _validate(trace_file)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code == 0:
        trace = load_trace(trace_file)
        assert out == f"ok: {len(trace.requests)} requests, {len(trace.steps)} steps\n" and err == ""
    else:
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"fdoverlap: error: {trace_file}"), err
