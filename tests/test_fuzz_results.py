"""Fuzzing `fdoverlap report` with random mutations of a real run.json, as test_fuzz_trace.py fuzzes traces.

The run.json is a real CPU comparison of a small synthesized trace. Whatever the mutation (a field
changed, deleted or given another type, a number nudged, scaled or pushed to 2^70, a column's rows
swapped, duplicated or deleted, the text cut short), `report` (table and --json) exits 0 with the
table, or 2 with one line naming the file; never another code, never an escaping exception.
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
from tests.conftest import run_cli
from tests.test_fuzz_trace import _nodes, _parent, _reorder

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=40)
    | st.integers()
    | st.sampled_from([2**62, 2**62 + 1, 2**63, 2**70, -(2**63), 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(["[/b]", "[red]", "sync", "overlap", "gpu", "gpu:copy"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory, ops: Any) -> dict[str, Any]:
    """A real run.json: both paths of a 5-request trace on the CPU."""
    folder = tmp_path_factory.mktemp("fuzz-results")
    trace, run = folder / "trace.json", folder / "run.json"
    synth = ["trace", "synth", "-n", "5", "--prompt-len", "4..12", "--output-len", "2..6", "--max-num-seqs", "3"]
    assert run_cli(*synth, "-o", str(trace)).returncode == 0
    done = run_cli("compare", str(trace), "--device", "cpu", "--warmup", "0", "-o", str(run))
    assert done.returncode == 0, done.stderr
    return json.loads(run.read_text())


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    """One random mutation of `doc` in place; half of them inside a path's step table."""
    where = data.draw(st.sampled_from(["anywhere", "columns", "columns"]), label="where")
    root: Any = doc
    if where == "columns" and doc.get("paths"):
        name = data.draw(st.sampled_from(sorted(doc["paths"])), label="path")
        path = doc["paths"][name]
        root = path.get("columns", path) if isinstance(path, dict) else doc
    nodes = _nodes(root)
    if not nodes:
        return
    kind = data.draw(st.sampled_from(["set", "delete", "nudge", "rows"]), label="kind")
    target = data.draw(st.sampled_from(nodes), label="node")
    parent, key = _parent(root, target), target[-1]
    if kind == "rows" and isinstance(parent[key], list):
        _reorder(parent[key], data)
    elif kind == "set":
        parent[key] = data.draw(JSON_VALUES, label="value")
    elif kind == "delete":
        del parent[key]
    elif isinstance(parent[key], int) and not isinstance(parent[key], bool):
        how = data.draw(st.sampled_from([-1, 1, -(10**9), 10**9, "double", "negate", "huge"]), label="how")
        value = parent[key]
        changed = {"double": value * 2, "negate": -value, "huge": 2**70}
        parent[key] = changed[how] if isinstance(how, str) else value + how


def _report(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["report", str(path), *extra])
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    return code, out.getvalue(), err.getvalue()


def test_the_unmutated_run_reports(valid: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(valid))
    code, out, err = _report(path)
    assert (code, err) == (0, "")
    assert "tokens identical" in out


@settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_runs_exit_0_or_2_with_one_line(valid: dict[str, Any], tmp_path: Path, data: st.DataObject) -> None:
    doc = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _mutate(doc, data)
    text = json.dumps(doc)
    if data.draw(st.integers(0, 19), label="truncate?") == 0:
        text = text[: data.draw(st.integers(0, len(text) - 1), label="cut")]
    path = tmp_path / "run.json"
    path.write_text(text)
    extra = data.draw(st.sampled_from([(), ("--json",)]), label="options")
    code, out, err = _report(path, *extra)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code in (0, 1):  # 1: a token check the mutated file records as failed
        assert out
        if code == 1:
            assert err.startswith("fdoverlap: error: ") and len(err.splitlines()) == 1, err
        else:
            assert err == "", err
        if extra:
            json.loads(out)
    else:
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"fdoverlap: error: {path}"), err
