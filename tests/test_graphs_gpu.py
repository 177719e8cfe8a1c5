"""Decode CUDA graphs on a GPU: what a replay computes, the tokens it leads to, and what capturing costs.

Identity, as this project defines it (docs/architecture.md, "CUDA graphs"): a graph replays exactly the
eager work of its padded batch, so a replay is bitwise the eager forward of the same padded batch, and
the two execute_model paths emit the same tokens under any one setting. Whether the tokens with graphs
on equal those with graphs off (the eager forward of the exact, unpadded batch, as FastDeploy runs it
without graphs) depends on whether each kernel's rows depend on the batch's row count (the GEMM that
M = the capture size gets against M = the token count: cuBLAS's algorithm, or the decode GEMM's kernel from
65 rows; the attention's split of the keys).
Those comparisons are reported, on one line per trace, as warnings and in $OUT/graph-identity.txt.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.graphs import capture_sizes
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams
from fdoverlap_cli.kernel_choices import GEMM_ENV
from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.results import RunResult
from fdoverlap_cli.trace import load_trace
from tests import engine_traces
from tests.conftest import run_cli
from tests.graph_probe import bitwise_equal, decoding_trace, one_forward_three_ways, padded_eager

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("ops")]

MODEL = model_config("8b", layers=2)  # the 8B-class shapes: the GEMMs' choices and the attention's splits as in a run
BUNDLED = ("default", "preempt", "mixed-chunked", "decode-b64", "decode-b128", "azure-conv-slice")


def _report(line: str) -> None:
    warnings.warn(line, stacklevel=2)
    if os.environ.get("OUT"):
        with (Path(os.environ["OUT"]) / "graph-identity.txt").open("a") as f:
            f.write(line + "\n")


def _difference(identity) -> str:
    if identity.identical:
        return "identical"
    d = identity.first_difference
    return f"differ first at step {d['step']}, request {d['request']}, token {d['token_index']}"


def _sync_tokens(trace, engine: Engine):
    engine.warm_up(4)
    run = engine.replay("sync")
    assert run.complete
    check = check_against_trace(trace, run.reader.tokens, run.reader.markers)
    assert check.ok, check.problems
    return run


def _traces():
    named = {name: (lambda n=name: load_trace(traces_dir() / f"{n}.json")) for name in BUNDLED}
    return {**named, **engine_traces.ALL}


TRACES = _traces()
# (trace, FDOVERLAP_GEMM): every trace with the environment's GEMM choice (unset: decode, whose kernel takes
# gate_up and lm_head at decode-b128's batches of 65 to 128 rows), and decode-b128 with paddle.matmul alone.
GRAPH_CASES = [*((name, None) for name in sorted(TRACES)), ("decode-b128", "paddle")]


@pytest.mark.parametrize(
    ("name", "gemm"), GRAPH_CASES, ids=[name if gemm is None else f"{name}-{gemm}" for name, gemm in GRAPH_CASES]
)
def test_graph_tokens_are_the_eager_tokens_of_the_same_padded_batches(monkeypatch, name, gemm):
    """Strict: graphs on vs the same padded batches launched eagerly. Reported: graphs on vs graphs off."""
    if gemm is not None:
        monkeypatch.setenv(GEMM_ENV, gemm)
    trace = TRACES[name]()
    device = Device.open("gpu")
    graph = _sync_tokens(trace, Engine(trace, device, MODEL, RunnerOptions(), cuda_graph="on"))
    padded = _sync_tokens(trace, padded_eager(Engine(trace, device, MODEL, RunnerOptions(), cuda_graph="off")))
    exact = _sync_tokens(trace, Engine(trace, device, MODEL, RunnerOptions(), cuda_graph="off"))
    replayed = int((graph.host["graph_rows"] > 0).sum())
    assert replayed > 0 and np.array_equal(graph.host["graph_rows"], padded.host["graph_rows"])
    same_shapes = compare_streams(trace, graph.reader.tokens, padded.reader.tokens, ("graph", "padded"))
    unpadded = compare_streams(trace, graph.reader.tokens, exact.reader.tokens, ("graph", "eager"))
    label = name if gemm is None else f"{name} ({GEMM_ENV}={gemm})"
    _report(
        f"{label}: {replayed} of {len(graph.host['step'])} steps replayed a graph; graph vs eager of the same "
        f"padded batches: {_difference(same_shapes)}; graph vs eager of the exact batches (--cuda-graph off): "
        f"{_difference(unpadded)}"
    )
    assert same_shapes.identical, (
        f"the graphs replay something else than the eager work: {same_shapes.first_difference}"
    )


def test_one_replayed_forward_is_bitwise_the_eager_forward_of_its_padded_batch():
    """5 decoding slots pad to 8: the replay's rows against the eager ones, padded (strict) and exact (reported)."""
    engine = Engine(decoding_trace(running=5), Device.open("gpu"), MODEL, RunnerOptions(), cuda_graph="on")
    engine.warm_up(3)
    out = one_forward_three_ways(engine)
    assert (out["rows"], out["size"]) == (5, 8)
    diff = np.abs(out["exact"].astype(np.float32) - out["graph"].astype(np.float32))
    padded = "bitwise equal" if bitwise_equal(out["graph"], out["padded"]) else "DIFFERENT"
    exact = (
        "bitwise equal"
        if bitwise_equal(out["graph"], out["exact"])
        else f"max |diff| {diff.max():.3g} in {int((diff > 0).any(axis=1).sum())} of 5 rows "
        "(row-count-dependent numerics)"
    )
    _report(
        f"one forward, 5 rows padded to 8, {MODEL.num_layers} layers: graph vs eager at M=8 {padded}; at M=5 {exact}"
    )
    assert np.isfinite(out["graph"].astype(np.float32)).all() and np.abs(out["graph"]).max() > 0
    assert bitwise_equal(out["graph"], out["padded"])


def test_the_capture_reports_its_sizes_time_and_memory():
    trace = load_trace(traces_dir() / "decode-b64.json")
    engine = Engine(trace, Device.open("gpu"), MODEL, RunnerOptions(), cuda_graph="on")
    engine.warm_up(2)
    g = engine.graph_capture
    assert g.sizes == capture_sizes(64) == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
    assert g.capture_ns > 0
    assert g.reserved_after >= g.reserved_before
    static_inputs = sum(8 * n + 4 * n + 4 * (trace.config.max_num_seqs + 1) for n in g.sizes)  # ids, batch ids, cu_q
    assert g.allocated_after - g.allocated_before >= static_inputs
    _report(
        f"capture, decode-b64, {MODEL.num_layers} layers: {len(g.sizes)} sizes in {g.capture_ns / 1e6:.1f} ms; "
        f"reserved {g.reserved_before} -> {g.reserved_after} B ({g.memory_bytes / 2**20:.1f} MiB), "
        f"allocated {g.allocated_before} -> {g.allocated_after} B"
    )


@pytest.mark.parametrize("mode", ["on", "off"])
def test_run_json_and_the_table_on_the_gpu(tmp_path, mode):
    out = tmp_path / "run.json"
    proc = run_cli(
        "replay", "traces/decode-b64.json", "--path", "overlap", "--preset", "8b", "--layers", "2",
        "--warmup", "2", "--cuda-graph", mode, "-o", str(out), "--window", "0:60",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    metrics = doc["derived"]["paths"]["overlap"]
    columns = RunResult.load(out).paths["overlap"].columns
    eager = (columns["tokens"] > 0) & (columns["graph_rows"] == 0) & (columns["prefill_tokens"] > 0)
    warmed = doc["eager_warmup"]["token_counts"]
    assert warmed == sorted(set(warmed)) and {int(n) for n in columns["tokens"][eager]} <= set(warmed)
    assert doc["eager_warmup"]["warmup_ns"] > 0 and f"eager warm-up: {len(warmed)} token counts" in proc.stdout
    if mode == "on":
        assert doc["cuda_graphs"]["sizes"] == list(capture_sizes(64))
        assert "CUDA graphs: decode batch sizes 1, 2, 4" in proc.stdout
        assert metrics["graph_steps"] > 0 and metrics["eager_steps"] > 0  # decode steps replay, prefills do not
    else:
        assert doc["cuda_graphs"] is None and "CUDA graphs: off" in proc.stdout
        assert metrics["graph_steps"] == 0 and metrics["eager_steps"] > 0
