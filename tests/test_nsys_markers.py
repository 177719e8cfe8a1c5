"""Steps without NVTX: the --steps grammar, the ground truth on the tool's own real exports with its NVTX
ignored, and synthetic exports of loops that emit no NVTX (pageable copies, late waits, graphs, irregular
steps, no marker at all)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.errors import ExitCode, InputError
from fdoverlap_cli.measure import intervals as iv
from fdoverlap_cli.measure import metrics
from fdoverlap_cli.measure.records import KIND_CODE, Kind
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.analysis import analyze
from fdoverlap_cli.nsys.markers import find_steps_in, rows
from fdoverlap_cli.nsys.markers.agreement import BOUNDARY_NS, agree
from fdoverlap_cli.nsys.markers.spec import CopyMarker, KernelMarker, NvtxMarker, SyncMarker, parse_steps
from fdoverlap_cli.nsys.steps import Attribution, attribute
from tests.foreign_exports import LoopShape, write_loop

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
SMALL = FIXTURES / "fdoverlap-small-2layers.sqlite"
PADDLE = FIXTURES / "paddle-h100-nvtx-dtoh.sqlite"
POINTS = 0.02  # per-step bubble and GPU busy within 2 points
# The tool's own real exports (the lead adds more, e.g. the 8B pair): each is a ground truth.
OWN_EXPORTS = sorted(FIXTURES.glob("fdoverlap-*.sqlite"))


# --------------------------------------------------------------------------- the grammar


@pytest.mark.parametrize(
    ("text", "spec", "canonical"),
    [
        ("copy:dtoh<=64KiB", CopyMarker("dtoh", None, 0, 65536), "copy:dtoh,<=64KiB"),
        ("copy:dtoh,pinned", CopyMarker("dtoh", "pinned"), "copy:dtoh,pinned"),
        ("copy:dtoh,pageable,=128B", CopyMarker("dtoh", "pageable", 128, 128), "copy:dtoh,pageable,=128B"),
        ("copy:htod,>1MB", CopyMarker("htod", None, 1_000_001, None), "copy:htod,>=1000001B"),
        ("copy:dtoh,<64KiB,>=8", CopyMarker("dtoh", None, 8, 65535), "copy:dtoh,>=8B,<=65535B"),
        ("sync", SyncMarker(), "sync"),
        ("sync:stream,event", SyncMarker(("event", "stream")), "sync:event,stream"),
        ("kernel:(?i)sampl", KernelMarker("(?i)sampl"), "kernel:(?i)sampl"),
        ("nvtx:step@fdoverlap", NvtxMarker("step", "fdoverlap"), "nvtx:step@fdoverlap"),
        ("nvtx:generation_step", NvtxMarker("generation_step"), "nvtx:generation_step"),
        ("nvtx:a@b@c", NvtxMarker("a@b", "c"), "nvtx:a@b@c"),
    ],
)
def test_steps_grammar(text, spec, canonical):
    assert parse_steps(text) == spec
    assert str(spec) == canonical
    assert parse_steps(canonical) == spec


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("copy:up", "copy direction 'up'"),
        ("copy:dtoh,<=64XB", "unknown size unit"),
        ("copy:dtoh,fast", "not a size bound"),
        ("copy:dtod,pinned", "no host memory"),
        ("copy:dtoh,pinned,pageable", "both pinned and pageable"),
        ("copy:dtoh,>1MiB,<1KiB", "no copy size"),
        ("sync:later", "sync kind 'later'"),
        ("kernel:", "needs a regular expression"),
        ("kernel:(unclosed", "not a regular expression"),
        ("nvtx:", "needs a range name"),
        ("nvtx:step@", "empty domain"),
        ("copies", "expected copy:DIR"),
    ],
)
def test_bad_steps_are_one_line_naming_the_spec(text, says):
    with pytest.raises(InputError) as e:
        parse_steps(text)
    message = str(e.value)
    assert message.startswith(f"--steps: '{text}': ") and says in message and "\n" not in message
    assert e.value.exit_code == ExitCode.BAD_INPUT


# --------------------------------------------------------------------------- ground truth: the tool's own export


def _nvtx_steps(path: Path | Attribution) -> dict[str, dict[str, np.ndarray]]:
    """Per path, from the tool's NVTX: each step's GPU end (max end of C_k and D_k), its kernels' union
    (kernels-only), its bubble to the next step's first kernel (kernels-only), and whether the next step
    inserts (its insert kernel is GPU work that the NVTX analysis keeps out of C_{k+1} and a marker cannot
    tell from the next step's compute). `path`: an export, or its attribution (with flows)."""
    if isinstance(path, Attribution):
        a = path
    else:
        with nsys.NsysExport.open(path) as export:
            a = attribute(export, keep_flows=True)
    out = {}
    for name, p in a.paths.items():
        s = p.spans
        per = metrics.path_metrics(s).per_step
        gpu = np.isin(s.kind, [KIND_CODE[Kind.COMPUTE], KIND_CODE[Kind.COPY]])
        kernels: dict[int, list] = {}
        for _, record in p.flows:
            if record.kind == Kind.COMPUTE:
                kernels.setdefault(record.step, []).append((record.start_ns, record.end_ns))
        inserts = set(s.step[s.kind == KIND_CODE[Kind.INSERT]].tolist())
        gpu_end = np.array([s.end_ns[gpu & (s.step == k)].max() for k in per.step])
        # The bubble as the kernels alone show it (a marker sees no more): to C_{k+1}'s first kernel, where the
        # NVTX analysis starts C_{k+1} at the engine's stage-start timestamp, as the tool's own timing does.
        first = np.array([min((a for a, _ in kernels.get(int(k) + 1, [])), default=np.nan) for k in per.step])
        out[name] = {
            "gpu_end": gpu_end,
            "kernel_busy": np.array([iv.measure(kernels.get(int(k), [])) for k in per.step]),
            "bubble": np.where(np.isnan(per.bubble_ns), np.nan, np.maximum(first - gpu_end, 0)),
            "next_inserts": np.array([int(k) + 1 in inserts for k in per.step]),
        }
    return out


@pytest.fixture(scope="module")
def small_truth():
    return _nvtx_steps(SMALL)


@pytest.mark.parametrize("spec", [None, "copy:dtoh,pinned", "sync:event"])
def test_ground_truth_on_the_tools_own_export(small_truth, spec):
    """fdoverlap-small-2layers.sqlite (H100): the steps found from CUDA activity alone against the tool's NVTX."""
    r = find_steps_in(SMALL, spec)
    assert r.unavailable is None
    for name, truth in small_truth.items():
        # An insert's kernel before the next forward ends the bubble for a marker, while the NVTX analysis keeps
        # insert work out of C_{k+1}: those steps' bubbles are not compared (their busy time is).
        bubble = np.where(truth["next_inserts"], np.nan, truth["bubble"])
        a = agree(r.steps, truth["gpu_end"], truth["kernel_busy"], bubble)
        assert a.found_share >= 0.98 and a.max_boundary_ns <= BOUNDARY_NS, (name, a.to_dict())
        assert np.nanmax(a.busy_points) <= POINTS, (name, a.to_dict())
        assert np.nanmax(a.bubble_points) <= POINTS, (name, a.to_dict())
        assert (~np.isnan(a.bubble_points)).sum() >= a.found - 3  # only the steps before an insert, and the last
        assert a.bubble_share <= POINTS, (name, a.to_dict())


def _assert_agrees(steps, truth: dict[str, dict[str, np.ndarray]]) -> None:
    for name, t in truth.items():
        # An insert's kernel before the next forward ends the bubble for a marker, while the NVTX analysis keeps
        # insert work out of C_{k+1}: those steps' bubbles are not compared (their busy time is).
        bubble = np.where(t["next_inserts"], np.nan, t["bubble"])
        a = agree(steps, t["gpu_end"], t["kernel_busy"], bubble)
        assert a.found_share >= 0.98 and a.max_boundary_ns <= BOUNDARY_NS, (name, a.to_dict())
        assert np.nanmax(a.busy_points) <= POINTS, (name, a.to_dict())
        assert np.nanmax(a.bubble_points) <= POINTS, (name, a.to_dict())
        assert a.bubble_share <= POINTS, (name, a.to_dict())


@pytest.mark.parametrize("path", OWN_EXPORTS, ids=[p.name for p in OWN_EXPORTS])
@pytest.mark.parametrize("spec", [None, "copy:dtoh,pinned"])
def test_ground_truth_through_analyze(path, spec):
    """`analyze --steps` on an export with the tool's NVTX: the steps found from CUDA activity alone, in the same
    analysis, against its NVTX-based one (every real own-engine export in tests/fixtures/nsys)."""
    a = analyze(path, keep_flows=True, steps=parse_steps(spec) if spec else None, find_steps=True)
    assert a.unavailable is None and a.markers is not None and a.markers.unavailable is None
    assert a.markers.choice.chosen == ("given" if spec else "automatic")
    _assert_agrees(a.markers.steps, _nvtx_steps(a.attribution))
    doc = a.to_dict()
    assert doc["paths"] and doc["markers"]["available"] and len(doc["markers"]["per_step"]["bubble_ns"]) > 0
    json.dumps(doc, allow_nan=False)


def test_analyze_finds_steps_only_when_asked_on_an_own_export():
    assert analyze(SMALL).markers is None  # the tool's NVTX gives the steps; no second pass
    assert analyze(SMALL, steps=parse_steps("sync:event")).markers.choice.spec == "sync:event"


def test_the_automatic_choice_on_the_tools_own_export():
    r = find_steps_in(SMALL)
    c = r.choice
    assert c.chosen == "automatic" and c.spec == "copy:dtoh,pinned,<=64KiB"
    assert c.events == 120 and c.boundaries == 60  # sampled_token_ids and not_need_stop: two copies, one step
    assert c.sampler_like_kernels == 60  # SampleGreedyKernel
    tried = {x.spec: x for x in c.candidates}
    assert {"sync:event", "kernel:^SampleGreedyKernel$", "copy:dtoh,pageable,<=64KiB"} <= tried.keys()
    assert tried["copy:dtoh,pageable,<=64KiB"].score > c.candidates[0].score + 1  # the read-backs: a few steps
    assert 0 < c.regularity.robust_cv < 1 and c.regularity.median_period_ns > 0
    run = r.run
    assert run.steps == 59 and run.long_steps >= 1  # the replays of the two paths are apart
    assert 0 < run.kernel_busy < run.kernel_busy_steady < 1
    assert run.pageable_dtoh_steps == 4 and any("pageable" in n for n in r.notes)  # the token-count read-backs
    repeated = {(x.what, x.name): x for x in run.repeats}
    assert repeated[("copy", "dtoh_pinned")].count_per_step == 2.0
    assert repeated[("copy", "dtoh_pinned")].bytes_per_step == 33.0  # 4 int64 tokens and a bool
    assert repeated[("kernel", "SampleGreedyKernel")].count_per_step == 1.0
    assert all(t.instrumentation_kernels.sum() > 0 for t in [r.steps])  # the engine's timestamps, counted apart
    json.dumps(r.to_dict(), allow_nan=False)


def test_the_small_paddle_export():
    """paddle-h100-nvtx-dtoh.sqlite: five steps, a 16 MiB pinned copy each, one more such copy before the loop."""
    auto = find_steps_in(PADDLE)
    assert auto.choice.spec == "copy:dtoh,pinned,=16MiB" and auto.choice.boundaries == 6
    ranges = find_steps_in(PADDLE, "nvtx:step@fdoverlap")
    assert ranges.choice.boundaries == 5 and len(ranges.steps) == 5  # an NVTX range is a whole step
    assert np.array_equal(ranges.steps.gpu_end_ns, auto.steps.gpu_end_ns)  # each step ends with its copy
    assert np.array_equal(ranges.steps.kernel_busy_ns, auto.steps.kernel_busy_ns)
    assert auto.steps.copies["dtoh_pinned"].bytes.tolist() == [16 << 20] * 5
    assert (auto.steps.kernels == 1).all()  # the matmul
    assert find_steps_in(PADDLE, "nvtx:step").choice.boundaries == 5  # any domain
    assert find_steps_in(PADDLE, "nvtx:step@other").unavailable.startswith("nvtx:step@other: no occurrence")


# --------------------------------------------------------------------------- synthetic loops without NVTX


def _check(r, expected, first: int = 1) -> None:
    t = r.steps
    assert t.gpu_end_ns.tolist() == expected.gpu_end[first:]
    assert t.kernel_busy_ns.tolist() == expected.kernel_busy[first:]
    assert t.kernels.tolist() == expected.kernels[first:]
    assert np.allclose(t.bubble_ns[:-1], expected.bubble()[first:]) and np.isnan(t.bubble_ns[-1])
    assert t.graph_launches.tolist() == expected.graph_launches[first:]
    assert t.pageable_dtoh.tolist() == expected.pageable[first:]


CASES = {
    "pinned copy, event sync": (LoopShape(), "copy:dtoh,pinned,<=64KiB"),
    "pageable copy, stream sync": (LoopShape(copy="pageable", sync="stream"), "copy:dtoh,pageable,<=64KiB"),
    "a step launched before the wait": (LoopShape(one_step_late=True, host_ns=20_000), "copy:dtoh,pinned,<=64KiB"),
    "graph executions": (LoopShape(graph="graph", sync="stream"), "copy:dtoh,pinned,<=64KiB"),
    "graph nodes": (LoopShape(graph="node"), "copy:dtoh,pinned,<=64KiB"),
    "an upload per step": (LoopShape(upload_bytes=8 << 20), "copy:dtoh,pinned,<=64KiB"),
    "no copy": (LoopShape(copy=None, sync="stream"), "sync:stream"),
    "only a sampler": (LoopShape(copy=None, sync=None), "kernel:^sample_tokens_kernel$"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_synthetic_loops(tmp_path, case):
    shape, chosen = CASES[case]
    expected = write_loop(tmp_path / "loop.sqlite", shape)
    r = find_steps_in(tmp_path / "loop.sqlite")
    assert r.choice.spec == chosen
    assert r.choice.regularity.robust_cv == 0.0 and r.choice.boundaries == shape.steps
    if chosen.startswith("kernel:"):  # the step ends at the sampler: its GPU end is the sampler's
        assert len(r.steps) == shape.steps - 1
        return
    _check(r, expected)


def test_event_waits_map_to_their_records(tmp_path):
    """A wait for step k after step k+1 was launched: the step is what was launched before the event's record."""
    expected = write_loop(tmp_path / "late.sqlite", LoopShape(one_step_late=True, host_ns=20_000))
    r = find_steps_in(tmp_path / "late.sqlite", "sync:event")
    _check(r, expected)
    assert r.steps.sync_api_ns[1:].min() > 0 and not r.notes
    with sqlite3.connect(tmp_path / "late.sqlite") as db:
        db.execute("DROP TABLE CUPTI_ACTIVITY_KIND_CUDA_EVENT")
    r = find_steps_in(tmp_path / "late.sqlite", "sync:event")
    assert "ends its step at the wait" in r.notes[0]  # without the record table: said, and the steps shift
    assert r.steps.gpu_end_ns.tolist() != expected.gpu_end[1:]


def test_pageable_copies_are_flagged_and_waits(tmp_path):
    write_loop(tmp_path / "p.sqlite", LoopShape(copy="pageable", sync=None))
    r = find_steps_in(tmp_path / "p.sqlite")
    assert r.run.pageable_dtoh_steps == r.run.steps
    assert "pageable memory" in r.notes[0]
    assert (r.steps.sync_api_ns > 0).all()  # the copy's call blocks: host time waiting, not launching
    assert find_steps_in(tmp_path / "p.sqlite", "sync:memcpy").choice.boundaries == 12


def test_irregular_steps_say_how_irregular(tmp_path):
    jitter = tuple(int(x) for x in np.random.default_rng(0).integers(0, 2_000_000, 12))
    expected = write_loop(tmp_path / "j.sqlite", LoopShape(jitter_ns=jitter))
    r = find_steps_in(tmp_path / "j.sqlite")
    _check(r, expected)
    assert r.choice.regularity.cv > 0.3 and r.choice.regularity.robust_cv > 0.3
    periods = np.diff(expected.gpu_end)
    assert r.run.step_time_ns.p50 == pytest.approx(np.median(periods))  # step i: from end i-1 to end i


def test_what_repeats_every_step(tmp_path):
    write_loop(tmp_path / "u.sqlite", LoopShape(upload_bytes=8 << 20))
    repeats = {(x.what, x.name): x for x in find_steps_in(tmp_path / "u.sqlite").run.repeats}
    assert repeats[("copy", "htod_pageable")].bytes_per_step == 8 << 20
    assert repeats[("kernel", "forward_kernel_0")].count_per_step == 2
    assert repeats[("kernel", "sample_tokens_kernel")].share == 1.0


def test_small_chunks_give_the_same_steps(tmp_path, monkeypatch):
    """The per-step unions carry across chunks: reading 7 rows at a time changes nothing."""
    write_loop(tmp_path / "c.sqlite", LoopShape(one_step_late=True, host_ns=5_000, graph="node"))
    whole = find_steps_in(tmp_path / "c.sqlite").to_dict()
    monkeypatch.setattr(rows, "CHUNK", 7)
    assert find_steps_in(tmp_path / "c.sqlite").to_dict() == whole


def test_no_marker_and_no_cuda(tmp_path):
    write_loop(tmp_path / "n.sqlite", LoopShape(copy=None, sync=None, sampler="forward_tail"))
    r = find_steps_in(tmp_path / "n.sqlite")
    assert r.steps is None and r.unavailable.startswith("no marker repeats regularly")
    assert json.loads(json.dumps(r.to_dict()))["available"] is False
    r = find_steps_in(tmp_path / "n.sqlite", "copy:htod")
    assert r.unavailable == "copy:htod: no occurrence in the export: no step"
    with sqlite3.connect(tmp_path / "n.sqlite") as db:
        db.execute("DROP TABLE CUPTI_ACTIVITY_KIND_RUNTIME")
    assert "no CUDA trace" in find_steps_in(tmp_path / "n.sqlite").unavailable


def test_not_an_export(tmp_path):
    (tmp_path / "x.sqlite").write_text("hello")
    with pytest.raises(InputError, match="not a SQLite file"):
        find_steps_in(tmp_path / "x.sqlite")
    with pytest.raises(InputError, match="--steps: 'sync:soon'"):
        find_steps_in(SMALL, "sync:soon")


def test_a_copy_that_fits_leaves_the_other_candidates_untried(tmp_path):
    write_loop(tmp_path / "r.sqlite", LoopShape())
    c = find_steps_in(tmp_path / "r.sqlite").choice
    assert c.spec == "copy:dtoh,pinned,<=64KiB" and c.candidates[0].score == 0.0
    untried = {x.spec for x in c.candidates if not x.tried}
    assert untried == {"sync:event", "kernel:^sample_tokens_kernel$"}
    assert all(x.score is None and x.events == 0 for x in c.candidates if not x.tried)
    jitter = tuple(int(x) for x in np.random.default_rng(1).integers(0, 2_000_000, 12))
    write_loop(tmp_path / "j.sqlite", LoopShape(jitter_ns=jitter))
    c = find_steps_in(tmp_path / "j.sqlite").choice
    assert c.candidates[0].score > 0.05 and all(x.tried for x in c.candidates)  # irregular: every one is tried
