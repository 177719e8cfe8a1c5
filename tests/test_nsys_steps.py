"""Attributing nsys activity to fdoverlap's steps: a hand-built export with hand-computed answers, and
simulated engine runs whose spans are known."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from fdoverlap_cli.measure import intervals as iv
from fdoverlap_cli.measure.derive import compare
from fdoverlap_cli.measure.metrics import path_metrics
from fdoverlap_cli.measure.records import Kind, SpanTable, Track
from fdoverlap_cli.measure.schema import TIMING_KERNELS
from fdoverlap_cli.nsys.analysis import analyze
from fdoverlap_cli.nsys.calls import api_name, is_host_wait_call, is_timing_kernel
from fdoverlap_cli.nsys.export import NsysExport
from fdoverlap_cli.nsys.steps import attribute
from tests.conftest import REPO
from tests.loop_model import ENGINE, write_export
from tests.nsys_export_writer import DEVICE, DTOH, PAGEABLE, PINNED, ExportWriter

LAUNCH = "cudaLaunchKernel_v7000"
STREAM = 7


def _overlap_two_steps(path) -> None:
    """Two steps of the overlap path (times in ns; see test_hand_built_overlap_path for the answers).

    step 0 [0, 300):   preprocess(0) [10, 100) launches K [30, 200); postprocess(0) [100, 150) launches
                       K [200, 250) and a pinned DtoH copy [250, 260).
    step 1 [290, 700): insert_tasks [291, 299) launches a kernel [294, 298); preprocess(1) [300, 400)
                       reads the token count back (cudaMemcpy [301, 309), pageable copy [303, 306)) and
                       launches K [320, 600); save(0) [400, 500) waits on the event [400, 410);
                       postprocess(1) [500, 560) launches K [600, 650), a copy [650, 660), a timestamp
                       kernel [660, 661).
    flush: save(1) [700, 800) waits [700, 705).
    """
    w = ExportWriter(path)
    d = w.domain("fdoverlap")

    def rng(a, b, name, payload=None):
        w.nvtx_range(a, b, name, domain=d, payload=payload)

    def kernel(call, gpu, name="k"):
        w.kernel(*gpu, name, stream=STREAM, correlation_id=w.call(*call, LAUNCH))

    def copy(call, gpu, api="cudaMemcpyAsync_v3020", dst=PINNED):
        corr = w.call(*call, api)
        w.memcpy(*gpu, stream=STREAM, correlation_id=corr, kind=DTOH, src=DEVICE, dst=dst, nbytes=8)

    rng(0, 1000, "overlap")
    rng(0, 300, "step", 0)
    rng(10, 100, "preprocess_and_execute_model", 0)
    kernel((20, 30), (30, 200))
    rng(100, 150, "postprocess", 0)
    kernel((110, 120), (200, 250))
    copy((130, 140), (250, 260))
    rng(290, 700, "step", 1)
    rng(291, 299, "insert_tasks", 1)
    kernel((292, 294), (294, 298), "insert_tasks_kernel")
    rng(300, 400, "preprocess_and_execute_model", 1)
    copy((301, 309), (303, 306), api="cudaMemcpy_v3020", dst=PAGEABLE)
    kernel((310, 320), (320, 600))
    rng(400, 500, "save_model_output", 0)
    w.call(400, 410, "cudaEventSynchronize_v3020")
    rng(500, 560, "postprocess", 1)
    kernel((510, 520), (600, 650))
    copy((530, 540), (650, 660))
    kernel((545, 550), (660, 661), "RecordTimestampKernel")
    rng(700, 800, "save_model_output", 1)
    w.call(700, 705, "cudaEventSynchronize_v3020")
    w.close()


def test_hand_built_overlap_path(tmp_path):
    _overlap_two_steps(tmp_path / "two.sqlite")
    a = analyze(tmp_path / "two.sqlite")
    assert a.unavailable is None and list(a.paths) == ["overlap"]
    m = a.paths["overlap"].metrics
    # H_0 = D_0 ∪ S_0 = [250, 260) ∪ [400, 500) (110 ns); C_1 = [320, 650); H_0 ∩ C_1 = [400, 500).
    assert (m.hidden_ns, m.hideable_ns) == (100, 110)
    assert m.hidden == pytest.approx(100 / 110)
    # bubble_0 = start of C_1 (320) - end of C_0 ∪ D_0 (260).
    assert m.bubble_ns.mean == 60
    # [260, 320), each instant to the innermost host span: iteration 0 to 290, then iteration 1 (other), the
    # insert [291, 299), iteration 1 again, preprocess(1) from 300 but its read-back [301, 309) split out.
    exposed = {k: v.total_ns for k, v in m.exposed.items() if v.total_ns}
    assert exposed == {"other": 30 + 1 + 1, "insert": 8, "preprocess": 1 + 11, "readback": 8}
    assert sum(exposed.values()) == m.bubble_total_ns
    # GPU busy = |[30, 260) ∪ [320, 660)| / (660 - 30): the insert, read-back and timestamp work is not C_k or D_k.
    assert m.gpu_busy == pytest.approx(570 / 630)
    # B_0 = 300; B_1 = 410 - 8 (read-back) - 10 (event wait); G_0 = 230, G_1 = 340.
    assert m.limit_ns == 300 + 392
    assert m.compute_mean_ns == (220 + 330) / 2
    assert m.host_stages[Kind.SAVE].count == 2 and m.host_stages[Kind.INSERT].count == 1
    work = a.paths["overlap"].work
    assert work["compute_kernels"]["count"] == 4
    assert work["dtoh_copies"]["count"] == 2
    assert work["waits"] == {"count": 3, "total_ns": 8 + 10 + 5}
    assert work["instrumentation_kernels"]["count"] == 1
    assert work["insert_work"]["count"] == 1
    assert work["other_gpu_work"]["count"] == 1  # the read-back copy: a wait, not D_k
    assert a.copies.by_destination() == {"pinned": 2, "pageable": 1, "device": 0}


def test_hand_built_spans(tmp_path):
    _overlap_two_steps(tmp_path / "two.sqlite")
    with NsysExport.open(tmp_path / "two.sqlite") as export:
        spans = attribute(export).paths["overlap"].spans.to_spans()
    by_kind = {}
    for s in spans:
        by_kind.setdefault(s.kind, []).append((s.step, s.start_ns, s.end_ns, s.track))
    gpu, host = Track.COMPUTE_STREAM, Track.HOST
    # C_k is one interval per stage: first kernel start to last kernel end of preprocess, and of postprocess.
    assert sorted(by_kind[Kind.COMPUTE]) == [
        (0, 30, 200, gpu),
        (0, 200, 250, gpu),
        (1, 320, 600, gpu),
        (1, 600, 650, gpu),
    ]
    assert sorted(by_kind[Kind.COPY]) == [(0, 250, 260, gpu), (1, 650, 660, gpu)]
    assert sorted(by_kind[Kind.ITERATION]) == [(0, 0, 300, host), (1, 290, 700, host)]
    assert sorted(by_kind[Kind.SAVE]) == [(0, 400, 500, host), (1, 700, 800, host)]
    # A wait's kind is its stage's: the read-back in preprocess, the event wait in save.
    assert sorted(by_kind[Kind.READBACK]) == [(1, 301, 309, host)]
    assert sorted(by_kind[Kind.EVENT_WAIT]) == [(1, 400, 410, host), (1, 700, 705, host)]
    assert Kind.WAIT not in by_kind
    assert sorted(by_kind[Kind.INSERT]) == [(1, 291, 299, host)]
    assert sorted(by_kind[Kind.PREPROCESS]) == [(0, 10, 100, host), (1, 300, 400, host)]
    assert sorted(by_kind[Kind.POSTPROCESS]) == [(0, 100, 150, host), (1, 500, 560, host)]


def test_idle_iteration_and_graph_launch(tmp_path):
    """A step range without preprocess (the worker idled) is no iteration; a graph launch's kernels all count."""
    w = ExportWriter(tmp_path / "idle.sqlite")
    d = w.domain("fdoverlap")
    w.nvtx_range(0, 1000, "overlap", domain=d)
    w.nvtx_range(0, 100, "step", domain=d, payload=0)
    w.nvtx_range(0, 50, "preprocess_and_execute_model", domain=d, payload=0)
    graph = w.call(10, 20, "cudaGraphLaunch_v10000")
    for a, b in ((20, 30), (30, 40), (45, 60)):
        w.kernel(a, b, "graph_kernel", stream=STREAM, correlation_id=graph)
    w.nvtx_range(50, 90, "postprocess", domain=d, payload=0)
    w.nvtx_range(100, 200, "step", domain=d, payload=1)  # idle: no preprocess inside
    w.nvtx_range(110, 190, "save_model_output", domain=d, payload=0)
    w.call(110, 120, "cudaStreamSynchronize_v3020")
    w.close()
    with NsysExport.open(tmp_path / "idle.sqlite") as export:
        p = attribute(export).paths["overlap"]
    spans = p.spans.to_spans()
    assert [(s.step, s.start_ns, s.end_ns) for s in spans if s.kind == Kind.ITERATION] == [(0, 0, 100)]
    assert p.idle_iterations == 1
    assert p.compute_kernels.count == 3
    # The stage's C_k spans the gap between kernels; the kernels themselves were busy 35 of those 40 ns.
    assert sorted((s.start_ns, s.end_ns) for s in spans if s.kind == Kind.COMPUTE) == [(20, 60)]
    assert p.kernel_busy_ns == 35
    assert [(s.step, s.start_ns) for s in spans if s.kind == Kind.EVENT_WAIT] == [(1, 110)]


def test_the_stage_start_timestamp_opens_c_k(tmp_path):
    """A timing kernel before a compute stage's first kernel opens C_k, as the engine's own timing does; one after
    it changes nothing; neither is a kernel of C_k (kernels-only busy, the count)."""
    w = ExportWriter(tmp_path / "stamp.sqlite")
    d = w.domain("fdoverlap")
    w.nvtx_range(0, 1000, "sync", domain=d)
    w.nvtx_range(0, 300, "step", domain=d, payload=0)
    w.nvtx_range(0, 200, "preprocess_and_execute_model", domain=d, payload=0)
    for call, gpu, name in (((5, 10), (12, 14), "RecordTimestampKernel"), ((60, 70), (75, 150), "k")):
        w.kernel(*gpu, name, stream=STREAM, correlation_id=w.call(*call, LAUNCH))
    w.kernel(152, 154, "RecordTimestampKernel", stream=STREAM, correlation_id=w.call(150, 151, LAUNCH))
    w.nvtx_range(200, 250, "postprocess", domain=d, payload=0)
    w.kernel(210, 240, "k", stream=STREAM, correlation_id=w.call(205, 208, LAUNCH))
    w.close()
    with NsysExport.open(tmp_path / "stamp.sqlite") as export:
        p = attribute(export).paths["sync"]
    assert sorted((s.start_ns, s.end_ns) for s in p.spans.to_spans() if s.kind == Kind.COMPUTE) == [
        (12, 150),
        (210, 240),
    ]
    assert p.kernel_busy_ns == 75 + 30 and p.compute_kernels.count == 2 and p.instrumentation.count == 2


def test_no_fdoverlap_domain(tmp_path):
    w = ExportWriter(tmp_path / "other.sqlite")
    d = w.domain("someone_else")
    w.nvtx_range(0, 10, "step", domain=d, payload=0)
    w.kernel(2, 5, "k", stream=STREAM, correlation_id=w.call(1, 2, LAUNCH))
    w.close()
    a = analyze(tmp_path / "other.sqlite")
    assert a.unavailable is not None and "no `fdoverlap` NVTX domain" in a.unavailable
    assert a.paths == {}
    assert a.kernels.count == 1


# --------------------------------------------------------------------------- simulated engine runs


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("nsys") / "sim.sqlite"
    expected = write_export(path, 8, warmup_steps=2)
    with NsysExport.open(path) as export:
        attribution = attribute(export, keep_flows=True)
    return path, expected, attribution


def _unions(table: SpanTable, kind: str) -> dict[int, list[tuple[int, int]]]:
    rows = table.of_kind(kind)
    merged, group = iv.merge_by_group(rows.intervals(), rows.step)
    out: dict[int, list[tuple[int, int]]] = {}
    for (a, b), g in zip(merged.tolist(), group.tolist(), strict=True):
        out.setdefault(g, []).append((a, b))
    return out


@pytest.mark.parametrize("path", ["sync", "overlap"])
def test_simulated_spans_match_the_definitions(simulated, path):
    _, expected, attribution = simulated
    got, want = attribution.paths[path].spans, SpanTable.from_spans(expected[path])
    for kind in Kind.ALL:
        assert _unions(got, kind) == _unions(want, kind), kind


@pytest.mark.parametrize("path", ["sync", "overlap"])
def test_simulated_metrics_match(simulated, path):
    _, expected, attribution = simulated
    got = path_metrics(attribution.paths[path].spans).to_dict()
    assert got == path_metrics(expected[path]).to_dict()
    assert got["compute_mean_ns"] > 0


def test_simulated_overlap_hides_more(simulated):
    _, _, attribution = simulated
    sync, overlap = (path_metrics(attribution.paths[p].spans) for p in ("sync", "overlap"))
    assert sync.hidden == 0
    assert overlap.hidden > 0.1
    assert compare(sync, overlap).speedup > 1


def test_simulated_bookkeeping(simulated):
    _, _, attribution = simulated
    shape = ENGINE
    assert attribution.has_domain and attribution.unavailable_reason(has_cuda=True) is None
    assert attribution.steps_outside_paths == 2  # the warm-up
    assert attribution.gpu_outside_paths > 2  # the warm-up's work and the other thread's kernels
    for p in attribution.paths.values():
        assert p.compute_kernels.count == 8 * (shape.forward_kernels + shape.post_kernels)
        assert p.dtoh_copies.count == 8 * 2
        assert p.instrumentation.count == 8 * 2
        assert p.insert_work.count == 2 * len(range(0, 8, shape.insert_every))
        assert p.other_work.count == len(range(0, 8, shape.readback_every))
        assert p.idle_iterations == 0
        assert p.spans.track_names[:2] == (Track.HOST, Track.COMPUTE_STREAM)


def test_flows_join_each_launch_to_its_gpu_record(simulated):
    _, _, attribution = simulated
    for p in attribution.paths.values():
        assert len(p.flows) == p.compute_kernels.count + p.dtoh_copies.count
        for launch, gpu in p.flows:
            assert launch.track == Track.HOST and gpu.track == Track.COMPUTE_STREAM
            assert launch.step == gpu.step and launch.start_ns <= gpu.start_ns


def test_more_kernels_per_step_and_no_timestamps(tmp_path):
    shape = dataclasses.replace(ENGINE, forward=20 * 5_000, forward_kernels=20, launch_ns=6_000, timestamps=False)
    expected = write_export(tmp_path / "launch-bound.sqlite", 5, shape)
    with NsysExport.open(tmp_path / "launch-bound.sqlite") as export:
        attribution = attribute(export)
    for path in ("sync", "overlap"):
        got = path_metrics(attribution.paths[path].spans)
        want = path_metrics(expected[path])
        assert got.to_dict() == want.to_dict()
        # Launch-bound: kernels leave gaps inside each stage. C_k is still one interval per stage (what the
        # engine's own timestamps see); only the kernels' own busy time, which nsys alone measures, shows the gaps.
        p = attribution.paths[path]
        assert len(p.spans.of_kind(Kind.COMPUTE)) == 5 * 2
        assert np.isclose(got.gpu_busy, want.gpu_busy)
        assert p.kernel_busy_ns < 0.9 * got.gpu_busy_ns


# --------------------------------------------------------------------------- naming rules


def test_api_names_and_waits():
    assert api_name("cudaMemcpyAsync_ptsz_v7000") == "cudaMemcpyAsync"
    assert api_name("cuMemcpyDtoH_v2") == "cuMemcpyDtoH"
    assert is_host_wait_call("cudaEventSynchronize_v3020")
    assert is_host_wait_call("cudaMemcpy_v3020")
    assert is_host_wait_call("cuStreamSynchronize")
    assert not is_host_wait_call("cudaMemcpyAsync_v3020")
    assert not is_host_wait_call("cudaStreamWaitEvent_v3020")  # the GPU waits, not the host
    assert not is_host_wait_call("cudaLaunchKernel_v7000")


def test_timing_kernels():
    assert is_timing_kernel("RecordTimestampKernel")
    assert is_timing_kernel("PingPongKernel")  # clock_samples
    assert not is_timing_kernel("sm90_xmma_gemm_f32f32")
    assert not is_timing_kernel("SampleGreedyKernel")
    assert not is_timing_kernel("timestamp_of_something_else")  # named, not matched by a part of the name


def test_timing_kernels_are_the_kernels_of_custom_ops_timing():
    """The names nsys shows for record_timestamp's and clock_samples' kernels: those the CUDA source defines."""
    source = (REPO / "custom_ops" / "timing" / "timestamp.cu").read_text()
    assert set(re.findall(r"__global__\s+void\s+(\w+)", source)) == TIMING_KERNELS
