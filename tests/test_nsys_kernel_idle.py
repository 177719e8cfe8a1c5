"""Where the GPU waited between the kernels of C_k (nsys/kernel_idle.py): a hand-built export with hand-computed
gaps, and the real H200 pair against an independent reading of the same export with sqlite3."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from fdoverlap_cli.measure.schema import COMPUTE_STAGES, TIMING_KERNELS
from fdoverlap_cli.nsys.analysis import analyze
from tests.nsys_export_writer import DEVICE, DTOH, PINNED, ExportWriter

STREAM = 7
LAUNCH, LAUNCH_EX, GRAPH_LAUNCH = "cudaLaunchKernel_v7000", "cuLaunchKernelEx", "cudaGraphLaunch_v10000"
PREPROCESS, POSTPROCESS = "preprocess_and_execute_model", "postprocess"
EXPORT = Path(__file__).parent / "fixtures" / "nsys" / "fdoverlap-pair-8b-2layers.sqlite"


def _graph_then_eager(path: Path) -> None:
    """A sync path of two steps, one stream (times in ns).

    step 0, a graph step: preprocess(0) launches K [30, 100) and a graph (one record [120, 400): a gap of 20
    before it); postprocess(0) launches K [520, 560) (a gap of 120) and a pinned DtoH copy [560, 570).
    step 1, eager: preprocess(1) launches K [1040, 1100) by cuLaunchKernelEx (a gap of 480 since 560), K
    [1300, 1400) by cudaLaunchKernel (a gap of 200), K [1390, 1450) (overlapping: 50 more busy, no gap) and a
    timing kernel [1460, 1470) (in no C_k); postprocess(1) launches K [1700, 1710) (a gap of 250).
    """
    w = ExportWriter(path)
    d = w.domain("fdoverlap")

    def rng(a: int, b: int, name: str, payload: int | None = None) -> None:
        w.nvtx_range(a, b, name, domain=d, payload=payload)

    def kernel(call: tuple[int, int], gpu: tuple[int, int], api: str = LAUNCH, name: str = "k") -> None:
        w.kernel(*gpu, name, stream=STREAM, correlation_id=w.call(*call, api))

    rng(0, 2000, "sync")
    rng(0, 990, "step", 0)
    rng(10, 500, PREPROCESS, 0)
    kernel((20, 25), (30, 100))
    w.graph_trace(120, 400, stream=STREAM, correlation_id=w.call(100, 110, GRAPH_LAUNCH))
    rng(500, 600, POSTPROCESS, 0)
    kernel((510, 515), (520, 560))
    corr = w.call(530, 540, "cudaMemcpyAsync_v3020")
    w.memcpy(560, 570, stream=STREAM, correlation_id=corr, kind=DTOH, src=DEVICE, dst=PINNED, nbytes=8)
    rng(600, 900, "save_model_output", 0)
    rng(1000, 1990, "step", 1)
    rng(1010, 1500, PREPROCESS, 1)
    kernel((1020, 1030), (1040, 1100), LAUNCH_EX)
    kernel((1100, 1105), (1300, 1400))
    kernel((1110, 1115), (1390, 1450))
    kernel((1120, 1125), (1460, 1470), name="RecordTimestampKernel")
    rng(1500, 1600, POSTPROCESS, 1)
    kernel((1510, 1515), (1700, 1710))
    rng(1600, 1900, "save_model_output", 1)
    w.close()


def test_hand_built_gaps_by_step_kind_stage_and_call(tmp_path):
    _graph_then_eager(tmp_path / "idle.sqlite")
    a = analyze(tmp_path / "idle.sqlite")
    assert a.unavailable is None
    p = a.paths["sync"]
    window = p.metrics.gpu_window_ns
    assert window == 1710 - 30
    idle = p.to_dict()["kernel_idle"]
    assert idle["graph_steps"] == {
        "steps": 1,
        "busy_ns": 70 + 280 + 40,
        "idle_ns": 20 + 120,
        "kernel_busy": 390 / 530,
    }
    assert idle["eager_steps"] == {
        "steps": 1,
        "busy_ns": 60 + 100 + 50 + 10,
        "idle_ns": 480 + 200 + 250,
        "kernel_busy": 220 / 1150,
    }
    assert p.work["kernel_busy_ns"] == 390 + 220
    assert [(w["step_kind"], w["stage"], w["call"], w["count"], w["idle_ns"]) for w in idle["waited_for"]] == [
        ("eager", PREPROCESS, "cuLaunchKernelEx", 1, 480),
        ("eager", POSTPROCESS, "cudaLaunchKernel", 1, 250),
        ("eager", PREPROCESS, "cudaLaunchKernel", 1, 200),
        ("graph", POSTPROCESS, "cudaLaunchKernel", 1, 120),
        ("graph", PREPROCESS, "cudaGraphLaunch", 1, 20),
    ]
    assert idle["waited_for"][0]["share"] == 480 / window and idle["waited_for"][0]["mean_ns"] == 480


def test_a_window_keeps_the_steps_it_measures(tmp_path):
    _graph_then_eager(tmp_path / "idle.sqlite")
    idle = analyze(tmp_path / "idle.sqlite", window=(1, 1)).paths["sync"].to_dict()["kernel_idle"]
    assert idle["graph_steps"] == {"steps": 0, "busy_ns": 0, "idle_ns": 0, "kernel_busy": None}
    assert idle["eager_steps"]["idle_ns"] == 930
    assert {w["step_kind"] for w in idle["waited_for"]} == {"eager"}


# ----------------------------------------------------------------------------- the real pair


def _independent_waits(db: sqlite3.Connection, path: str, measured: set[int]) -> dict[tuple[str, str, str], list[int]]:
    """(step kind, stage, call) -> [gaps, idle ns], read straight from the export: the union of the path's
    compute-stage kernels (timing kernels left out) and whole-graph records by start, each gap to the record
    that ends it, its call by correlationId in CUPTI_ACTIVITY_KIND_RUNTIME."""
    (domain,) = db.execute("SELECT domainId FROM NVTX_EVENTS WHERE eventType = 75 AND text = 'fdoverlap'").fetchone()
    ranges = db.execute(
        "SELECT e.start, e.end, e.globalTid, COALESCE(e.text, s.value), e.int64Value FROM NVTX_EVENTS e "
        "LEFT JOIN StringIds s ON s.id = e.textId WHERE e.eventType = 59 AND e.domainId = ?",
        (domain,),
    ).fetchall()
    ((p_start, p_end, tid),) = [(s, e, t) for s, e, t, name, _ in ranges if name == path]
    stages = [
        (s, e, name, k) for s, e, t, name, k in ranges if t == tid and name in COMPUTE_STAGES and p_start <= s < p_end
    ]
    timing = {i for (i,) in db.execute(f"SELECT id FROM StringIds WHERE value IN {tuple(TIMING_KERNELS)}")}
    calls = {
        corr: (start, re.sub(r"(_ptsz)?(_v\d+)?$", "", name))
        for corr, start, name in db.execute(
            "SELECT r.correlationId, r.start, s.value FROM CUPTI_ACTIVITY_KIND_RUNTIME r "
            "JOIN StringIds s ON s.id = r.nameId WHERE r.globalTid = ?",
            (tid,),
        )
    }
    records = [
        (start, end, corr)
        for start, end, corr, name in db.execute(
            "SELECT start, end, correlationId, shortName FROM CUPTI_ACTIVITY_KIND_KERNEL UNION ALL "
            "SELECT start, end, correlationId, NULL FROM CUPTI_ACTIVITY_KIND_GRAPH_TRACE"
        )
        if corr in calls and name not in timing
    ]

    def stage_of(t: int) -> tuple[str, int] | None:
        return next(((name, k) for s, e, name, k in stages if s <= t < e), None)

    graph_steps = {
        stage[1] for start, call in calls.values() if call == "cudaGraphLaunch" and (stage := stage_of(start))
    }
    waits: dict[tuple[str, str, str], list[int]] = {}
    union_end = None
    for start, end, corr in sorted(records):
        call_start, call = calls[corr]
        stage = stage_of(call_start)
        if stage is None:
            continue
        if union_end is not None and start > union_end and stage[1] in measured:
            kind = "graph" if stage[1] in graph_steps else "eager"
            entry = waits.setdefault((kind, stage[0], call), [0, 0])
            entry[0] += 1
            entry[1] += start - union_end
        union_end = end if union_end is None else max(union_end, end)
    return waits


@pytest.mark.skipif(not EXPORT.exists(), reason=f"the real pair {EXPORT.name} is not in tests/fixtures/nsys/")
def test_the_real_pair_shows_where_the_gpu_waited():
    a = analyze(EXPORT)
    db = sqlite3.connect(f"file:{EXPORT}?mode=ro", uri=True)
    try:
        for name, p in a.paths.items():
            idle = p.to_dict()["kernel_idle"]
            graph, eager = idle["graph_steps"], idle["eager_steps"]
            steps = p.metrics.per_step.step
            assert graph["steps"] + eager["steps"] == len(steps) == 26, name
            assert (graph["steps"], eager["steps"]) == (24, 2), name  # 24 steps replayed the decode graph
            # every step ran inside the window, so the kinds' busy time is the whole union of C_k's records
            assert graph["busy_ns"] + eager["busy_ns"] == p.work["kernel_busy_ns"], name
            assert 0 < graph["kernel_busy"] < 1 and 0 < eager["kernel_busy"] < 1, name
            waited = idle["waited_for"]
            assert [w["idle_ns"] for w in waited] == sorted((w["idle_ns"] for w in waited), reverse=True), name
            assert sum(w["idle_ns"] for w in waited) <= graph["idle_ns"] + eager["idle_ns"], name
            expected = _independent_waits(db, name, {int(k) for k in steps})
            top = max(expected.items(), key=lambda item: item[1][1])
            assert (waited[0]["step_kind"], waited[0]["stage"], waited[0]["call"]) == top[0], name
            assert (waited[0]["count"], waited[0]["idle_ns"]) == tuple(top[1]), name
            assert sum(ns for _, ns in expected.values()) == graph["idle_ns"] + eager["idle_ns"], name
            ranked = sorted(expected.items(), key=lambda item: (-item[1][1], item[0]))
            assert [(w["step_kind"], w["stage"], w["call"], [w["count"], w["idle_ns"]]) for w in waited] == [
                (*key, value) for key, value in ranked[: len(waited)]
            ], name
    finally:
        db.close()
