"""`fdoverlap analyze` on exports without the tool's NVTX: the steps found from CUDA activity, --steps, and
`--vs` (two exports' per-step tables side by side), printed and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.nsys.analysis import analyze, analyze_versus
from fdoverlap_cli.nsys.markers import parse_steps
from fdoverlap_cli.nsys.markers.versus import rows
from tests.conftest import run_cli
from tests.foreign_exports import LoopShape, write_loop

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
SMALL = FIXTURES / "fdoverlap-small-2layers.sqlite"


@pytest.fixture(scope="module")
def loops(tmp_path_factory):
    """A synchronous loop (pageable copy, stream sync) and an asynchronous one (pinned copy, waits a step late)."""
    folder = tmp_path_factory.mktemp("loops")
    sync, overlap = folder / "sync.sqlite", folder / "async.sqlite"
    expected = (
        write_loop(sync, LoopShape(steps=40, copy="pageable", sync="stream", host_ns=120_000)),
        write_loop(overlap, LoopShape(steps=40, one_step_late=True, host_ns=120_000, upload_bytes=1 << 20)),
    )
    return sync, overlap, expected


def _json(*args: str) -> dict:
    result = run_cli("analyze", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_analyze_finds_the_steps_of_a_foreign_export(loops):
    sync, _, (expected, _) = loops
    out = _json(str(sync))
    assert out["per_step"]["available"] is False and "no `fdoverlap` NVTX domain" in out["per_step"]["reason"]
    m = out["markers"]
    assert m["available"] and m["marker"]["chosen"] == "automatic"
    assert m["marker"]["spec"] == "copy:dtoh,pageable,<=64KiB" and m["marker"]["regularity"]["robust_cv"] == 0.0
    run, per_step = m["run"], m["per_step"]
    assert run["steps"] == 39 and per_step["gpu_end_ns"] == expected.gpu_end[1:]
    assert per_step["kernel_busy_ns"] == expected.kernel_busy[1:]
    assert run["pageable_dtoh_steps"] == 39 and any("pageable memory" in n for n in m["notes"])
    assert run["copies"]["dtoh_pageable"]["count_per_step"] == 1.0 and run["copies"]["htod_pinned"]["steps"] == 0
    assert run["gpu_kernel_ns"]["mean"] == pytest.approx(np.mean(expected.kernel_busy[1:]))
    assert run["sync_api_ns"]["min"] > 0  # the pageable copy's call blocks: a wait


def test_analyze_prints_the_steps_and_says_pageable_blocks(loops):
    sync, overlap, _ = loops
    result = run_cli("analyze", str(sync))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "per-step metrics: not available" in text and "the steps found from the CUDA activity follow" in text
    assert "marker copy:dtoh,pageable,<=64KiB (chosen automatically)" in text
    assert "robust cv 0.000" in text
    for label in ("GPU time, kernels only / step", "bubble (mean)", "host: sync waits / step", "copies DtoH pageable"):
        assert label in text
    assert "CUDA completes such a copy before the call returns" in text
    text = " ".join(run_cli("analyze", str(overlap), "--steps", "sync:event").stdout.split())
    assert "marker sync:event (given with --steps)" in text
    assert "every step: copy htod_pageable: 1.00 per step, 1.0 MiB" in text  # what repeats every step
    assert "copies DtoH pageable" not in text  # a kind no step has is left out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "copy:sideways"], "--steps: 'copy:sideways': copy direction 'sideways'"),
        (["--vs-steps", "sync"], "--vs-steps: only with --vs"),
        (["--vs", "{other}", "--against", "{other}"], "--vs: not with --against"),
        (["--vs", "{other}", "--vs-steps", "kernel:("], "--steps: 'kernel:(': not a regular expression"),
        (["--vs", "{other}", "--timeline", "t.json"], "--timeline: not with --vs"),
    ],
)
def test_bad_options_are_one_line(loops, args, says):
    sync, overlap, _ = loops
    result = run_cli("analyze", str(sync), *(a.format(other=overlap) for a in args))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_versus_json(loops):
    sync, overlap, (a, b) = loops
    out = _json(str(sync), "--vs", str(overlap))
    assert set(out) == {"a", "b", "vs"}
    assert out["a"]["markers"]["marker"]["spec"] == "copy:dtoh,pageable,<=64KiB"
    assert out["b"]["markers"]["marker"]["spec"] == "copy:dtoh,pinned,<=64KiB"
    changes = out["vs"]["changes"]
    assert out["vs"]["available"] and set(changes) == {m.key for m in rows()}
    pageable = changes["copies.dtoh_pageable.count_per_step"]
    assert pageable == {"a": 1.0, "b": 0.0, "delta": -1.0, "within_noise": False}  # the same every step: a change
    step = changes["step_time_ns.mean"]
    assert step["a"] == pytest.approx(np.diff(a.gpu_end).mean())
    assert step["b"] == pytest.approx(np.diff(b.gpu_end).mean())
    assert changes["steps"]["within_noise"] is None  # a count: what it is
    upload = changes["copies.htod_pageable.bytes_per_step"]
    assert upload["a"] == 0 and upload["b"] == 1 << 20


def test_versus_printed_and_the_same_marker_for_both(loops):
    sync, overlap, _ = loops
    result = run_cli("analyze", str(sync), "--vs", str(overlap), "--steps", "sync")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert text.count("marker sync (given with --steps)") == 2  # B's marker is --steps without --vs-steps
    assert "per step, steps found without NVTX: A against B" in text
    for m in rows():
        if m.shown_when_zero:
            assert m.label in text
    assert "within noise" in text or "%" in text


def test_versus_with_another_marker_and_an_export_without_one(loops, tmp_path):
    sync, overlap, _ = loops
    v = analyze_versus(sync, overlap, steps=parse_steps("sync:stream"), vs_steps=parse_steps("sync:event"))
    assert v.a.markers.choice.spec == "sync:stream" and v.b.markers.choice.spec == "sync:event"
    assert v.comparison.unavailable is None
    none = tmp_path / "none.sqlite"
    write_loop(none, LoopShape(copy=None, sync=None, sampler="forward_tail"))
    v = analyze_versus(sync, none)
    assert v.comparison.unavailable.startswith("B: no marker repeats regularly") and not v.comparison.changes
    result = run_cli("analyze", str(sync), "--vs", str(none))
    assert result.returncode == 0 and "per step, A against B: not available: B: no marker" in " ".join(
        result.stdout.split()
    )


def test_an_own_export_against_a_foreign_one():
    """--vs on the tool's own export finds its steps from the markers too (the same table for both)."""
    v = analyze_versus(SMALL, SMALL, steps=parse_steps("copy:dtoh,pinned"))
    assert v.a.paths and v.a.markers.run.steps == 59
    assert all(c.delta == 0 for c in v.comparison.changes.values() if c.delta is not None)
    assert v.comparison.changes["bubble_ns.mean"].within_noise is True  # identical: no difference at all


def test_markers_rows_are_in_the_catalog_once():
    keys = [m.key for m in catalog.MARKER_METRICS]
    assert len(keys) == len(set(keys)) and {m.source for m in rows()} == {catalog.MARKERS}
    assert catalog.markdown().count("`markers.steps`") == 1
    doc = analyze(SMALL, find_steps=True).markers.run.to_dict()
    missing = [m.key for m in rows() if m.value(doc) is None and m.shown_when_zero]
    assert not missing  # every row the table always shows has its value in the run's JSON


def test_markdown_and_html_hold_the_marker_tables(loops, tmp_path):
    sync, overlap, _ = loops
    md, page = tmp_path / "one.md", tmp_path / "one.html"
    assert run_cli("analyze", str(sync), "--markdown", str(md), "--html", str(page)).returncode == 0
    assert "per step, steps found without NVTX" in md.read_text() and "GPU time, kernels only / step" in md.read_text()
    assert "Steps found without NVTX" in page.read_text()
    md = tmp_path / "vs.md"
    result = run_cli("analyze", str(sync), "--vs", str(overlap), "--markdown", str(md), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["vs"]["available"]
    text = md.read_text()
    assert "**per step, steps found without NVTX: A against B**" in text
    assert "| A | B | change |" in text
    assert "host: sync waits / step" in text and f"wrote {md}" in result.stderr


def test_json_stream_writes_what_json_dumps_would(monkeypatch):
    import io

    from fdoverlap_cli.render import json_stream

    monkeypatch.setattr(json_stream, "CHUNK", 3)  # arrays written in several pieces
    a = np.array([1.5, np.nan, 3.0, 4.0, np.nan, 6.25, 7.0])
    doc = {"x": a, "n": np.arange(8), "empty": np.empty(0), "nested": [{"k": [1, 2], "s": "é\n"}, []], "d": {}}
    doc["list"] = [1, None, "a"]
    buf = io.StringIO()
    json_stream.write(doc, buf)
    plain = {**doc, "x": [None if np.isnan(v) else v for v in a.tolist()], "n": list(range(8)), "empty": []}
    assert json.loads(buf.getvalue()) == plain
    without_arrays = {k: v for k, v in plain.items() if k not in ("x", "n", "empty")}
    out = io.StringIO()
    json_stream.write(without_arrays, out)
    assert out.getvalue() == json.dumps(without_arrays, indent=2) + "\n"  # the same text as before
