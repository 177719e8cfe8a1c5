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
from fdoverlap_cli.nsys import analysis
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


def test_two_processes_in_one_export_are_attributed_per_process(tmp_path):
    """The ranks of a --tp 2 run profiled together: each process's paths apart, named by its pid, and each one's
    spans those of its own loop (the other rank's ranges and kernels, at the same times, take nothing)."""
    path = tmp_path / "two-ranks.sqlite"
    expected = write_export(path, 5, warmup_steps=1, processes=(4242, 4343))
    with NsysExport.open(path) as export:
        attribution = attribute(export)
    names = {f"{p}@pid{pid}" for p in ("sync", "overlap") for pid in (4242, 4343)}
    assert set(attribution.paths) == set(expected) == names
    for name, p in attribution.paths.items():
        assert p.pid == int(name.rsplit("@pid", 1)[1])
        got, want = p.spans, SpanTable.from_spans(expected[name])
        for kind in Kind.ALL:
            assert _unions(got, kind) == _unions(want, kind), (name, kind)
        assert p.compute_kernels.count == attribution.paths[name.replace("4343", "4242")].compute_kernels.count


def test_one_process_keeps_the_plain_path_names(simulated):
    _, _, attribution = simulated
    assert set(attribution.paths) == {"sync", "overlap"}
    assert {p.pid for p in attribution.paths.values()} == {4242}


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


# ----------------------------------------------------------------------------- CUDA graphs, both ways nsys traces them

GRAPH_LAUNCH = "cudaGraphLaunch_v10000"
GRAPH_NODES = ((30, 100), (100, 180), (182, 200))  # the decode forward's kernels, relative to the step


def _graph_steps(path, traced: str) -> None:
    """Two sync steps whose forward is a graph replay, traced as a whole ('graph') or per node ('node').

    step k at base b = 300 k: preprocess [b+10, b+100) launches get_padding_offset's kernel [b+20, b+25) and
    the graph (cudaGraphLaunch [b+26, b+29)): one record [b+30, b+200), or its three nodes GRAPH_NODES;
    postprocess [b+100, b+150) launches K [b+200, b+250) and a pinned DtoH copy [b+250, b+260); save
    [b+150, b+290) waits [b+150, b+262).
    """
    w = ExportWriter(path)
    d = w.domain("fdoverlap")

    def rng(a, b, name, payload=None):
        w.nvtx_range(a, b, name, domain=d, payload=payload)

    rng(0, 1000, "sync")
    for k in (0, 1):
        b = 300 * k
        rng(b, b + 295, "step", k)
        rng(b + 10, b + 100, "preprocess_and_execute_model", k)
        w.kernel(b + 20, b + 25, "get_padding_offset", stream=STREAM, correlation_id=w.call(b + 12, b + 14, LAUNCH))
        corr = w.call(b + 26, b + 29, GRAPH_LAUNCH)
        if traced == "graph":
            w.graph_trace(b + 30, b + 200, stream=STREAM, correlation_id=corr)
        else:
            for node, (s, e) in enumerate(GRAPH_NODES, start=1):
                w.kernel(b + s, b + e, f"layer_kernel_{node}", stream=STREAM, correlation_id=corr, graph_node=node)
        rng(b + 100, b + 150, "postprocess", k)
        w.kernel(b + 200, b + 250, "sample", stream=STREAM, correlation_id=w.call(b + 110, b + 120, LAUNCH))
        corr = w.call(b + 130, b + 140, "cudaMemcpyAsync_v3020")
        w.memcpy(b + 250, b + 260, stream=STREAM, correlation_id=corr, kind=DTOH, src=DEVICE, dst=PINNED, nbytes=8)
        rng(b + 150, b + 290, "save_model_output", k)
        w.call(b + 150, b + 262, "cudaEventSynchronize_v3020")
    w.close()


@pytest.fixture(scope="module")
def graph_exports(tmp_path_factory):
    out = {}
    for traced in ("graph", "node"):
        out[traced] = tmp_path_factory.mktemp(traced) / f"{traced}.sqlite"
        _graph_steps(out[traced], traced)
    return out


@pytest.mark.parametrize("traced", ["graph", "node"])
def test_a_graph_replay_counts_in_the_stage_that_launched_it(graph_exports, traced):
    a = analyze(graph_exports[traced])
    assert a.unavailable is None
    spans = a.attribution.paths["sync"].spans.to_spans()
    # C_k of preprocess(k): get_padding_offset's kernel to the graph's end, whichever way the graph was traced.
    assert sorted((s.step, s.start_ns, s.end_ns) for s in spans if s.kind == Kind.COMPUTE) == [
        (0, 20, 200),
        (0, 200, 250),
        (1, 320, 500),
        (1, 500, 550),
    ]
    work = a.paths["sync"].work
    assert work["graph_launches"] == {"count": 2, "total_ns": 2 * 3}  # once per call, not per node
    if traced == "graph":
        assert work["graph_records"] == {"count": 2, "total_ns": 2 * 170}
        assert work["compute_kernels"]["count"] == 2 * 2
        # a whole-graph record counts as busy across the gap between its nodes (180..182)
        assert work["kernel_busy_ns"] == 2 * (5 + 220)
        assert analysis.WHOLE_GRAPH_NOTE in a.notes
    else:
        assert work["graph_records"]["count"] == 0
        assert work["compute_kernels"]["count"] == 2 * (2 + len(GRAPH_NODES))
        assert work["kernel_busy_ns"] == 2 * (5 + 150 + 68)
        assert analysis.WHOLE_GRAPH_NOTE not in a.notes
    doc = a.to_dict()
    assert doc["cuda_graphs"]["traced"] == traced
    assert doc["cuda_graphs"]["records"] == (2 if traced == "graph" else 0)
    assert doc["cuda_graphs"]["node_kernels"] == (0 if traced == "graph" else 2 * len(GRAPH_NODES))


def test_both_graph_tracings_give_the_same_step_metrics(graph_exports):
    whole, nodes = (analyze(graph_exports[t]).paths["sync"].metrics for t in ("graph", "node"))
    for key in ("wall_ns", "gpu_busy", "compute_mean_ns", "limit_ns", "hidden", "bubble_total_ns"):
        assert getattr(whole, key) == getattr(nodes, key), key
    # GPU busy of the export counts a whole-graph record like a kernel: |[20,25) ∪ [30,260)| per step
    a = analyze(graph_exports["graph"])
    assert a.gpu.busy_ns == 2 * (5 + 230)


def test_the_analysis_table_says_how_the_graphs_were_traced(graph_exports):
    from rich.console import Console

    from fdoverlap_cli.render.nsys_tables import print_analysis

    for traced, fragment in (("graph", "2 launches traced as a whole"), ("node", "6 of the kernels ran inside graphs")):
        console = Console(record=True, width=200)
        print_analysis(analyze(graph_exports[traced]), console=console)
        text = console.export_text()
        assert f"CUDA graphs: {fragment}" in text
        assert re.search(r"CUDA graph launches[\s│]+2\b", text)
