"""Decode CUDA graphs (engine/graphs.py) on the CPU: the capture sizes, the padded batch, the option, the record.

The CPU has no CUDA graphs; tests/graph_probe.py's stand-in graphs re-run their captured work into the
captured output, so everything around a replay (padding, static buffers, their copies, which steps replay)
runs here as on a GPU. tests/test_graphs_gpu.py replays real graphs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdoverlap_cli.engine.bookkeeping import planned_launches
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.graphs import EagerWarmup, GraphCapture, capture_sizes, graphs_enabled, padded_size
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import compare_streams
from fdoverlap_cli.errors import FdoError, InputError, OptionError
from fdoverlap_cli.render.run_tables import graph_line, summary_dict, warmup_line
from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.results import PathRecord, RunResult
from fdoverlap_cli.session import ReplayConfig, ReplaySession
from fdoverlap_cli.trace import load_trace
from tests import engine_traces
from tests.conftest import run_cli
from tests.graph_probe import CpuGraphDevice, bitwise_equal, decoding_trace, one_forward_three_ways, padded_eager

pytestmark = pytest.mark.usefixtures("ops")
MODEL = model_config("tiny")


# ----------------------------------------------------------------------------- the sizes and the padding


@pytest.mark.parametrize(
    ("max_num_seqs", "sizes"),
    [
        (1, (1,)),
        (3, (1, 2, 3)),
        (16, (1, 2, 4, 8, 16)),
        (20, (1, 2, 4, 8, 16, 20)),
        (64, (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)),
        (128, (1, 2, 4, *range(8, 129, 8))),
        (200, (1, 2, 4, *range(8, 129, 8), 144, 160, 176, 192, 200)),
        (4096, (1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), *range(288, 513, 32))),
    ],
)
def test_capture_sizes_follow_fastdeploys_default_rule(max_num_seqs, sizes):
    assert capture_sizes(max_num_seqs) == sizes


def test_a_batch_pads_to_the_next_captured_size():
    sizes = capture_sizes(64)
    assert [padded_size(sizes, n) for n in (1, 2, 3, 5, 8, 9, 17, 63, 64, 65)] == [1, 2, 4, 8, 8, 16, 24, 64, 64, None]


def test_the_mode_and_the_device():
    assert graphs_enabled("auto", True) and not graphs_enabled("auto", False)
    assert not graphs_enabled("off", True)
    with pytest.raises(OptionError, match=r"^cuda_graph: on needs a GPU"):
        graphs_enabled("on", False)
    with pytest.raises(OptionError, match="expected auto, on or off, got 'sometimes'"):
        graphs_enabled("sometimes", True)


# ----------------------------------------------------------------------------- replaying the stand-in graphs


def _tokens(engine: Engine, path: str = "sync"):
    run = engine.replay(path)
    assert run.complete
    return run


def _graph_steps_are_the_decode_steps(run) -> None:
    h = run.host
    ran = h["tokens"] > 0
    decode = ran & (h["prefill_tokens"] == 0)
    assert np.all(h["graph_rows"][decode] >= h["tokens"][decode])  # padded to a size that holds the batch
    assert np.all(h["graph_rows"][ran & ~decode] == 0)  # a batch with a prefill runs eagerly
    assert decode.any() and (ran & ~decode).any()


_TRACES = {
    **{name: make for name, make in engine_traces.ALL.items()},
    **{name: (lambda n=name: load_trace(traces_dir() / f"{n}.json")) for name in ("default", "preempt")},
}


@pytest.mark.parametrize("name", sorted(_TRACES))
def test_replaying_graphs_emits_the_eager_tokens(name):
    trace = _TRACES[name]()
    eager = _tokens(Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off"))
    device = CpuGraphDevice()
    engine = Engine(trace, device, MODEL, RunnerOptions(verify_token_count=True), cuda_graph="on")
    graph = _tokens(engine, "overlap")
    identity = compare_streams(trace, eager.reader.tokens, graph.reader.tokens, ("eager", "graph"))
    assert identity.identical, identity.first_difference
    _graph_steps_are_the_decode_steps(graph)
    assert np.all(eager.host["graph_rows"][eager.host["tokens"] > 0] == 0)
    assert engine.graph_capture.sizes == capture_sizes(trace.config.max_num_seqs)
    # every replay ran the captured work of its size, once per decode step
    assert sum(g.replays for g in device.captured) == int((graph.host["graph_rows"] > 0).sum())


def test_the_padded_eager_probe_emits_the_eager_tokens():
    """The GPU tests' probe (a padded batch without a graph) is itself right: padding rows change no token."""
    trace = load_trace(traces_dir() / "default.json")
    eager = _tokens(Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off"))
    padded = _tokens(padded_eager(Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off")))
    assert compare_streams(trace, eager.reader.tokens, padded.reader.tokens, ("eager", "padded")).identical
    _graph_steps_are_the_decode_steps(padded)


def test_a_capture_failure_is_one_engine_error(monkeypatch):
    device = CpuGraphDevice()

    def unsupported(work):
        raise RuntimeError("(PreconditionNotMet) operation not permitted when stream is capturing\n  [graph.cc:12]")

    monkeypatch.setattr(device, "capture_graph", unsupported)
    engine = Engine(engine_traces.preemption(), device, MODEL, RunnerOptions(), cuda_graph="on")
    with pytest.raises(
        FdoError, match=r"^capturing the decode forward as a CUDA graph at batch size 4 failed: "
    ) as info:
        engine.warm_up(2)
    assert "\n" not in str(info.value) and "stream is capturing" in str(info.value)


# ----------------------------------------------------------------------------- the record


def test_run_json_records_the_capture_and_the_steps_that_replayed(tmp_path, monkeypatch):
    monkeypatch.setattr("fdoverlap_cli.session.Device.open", lambda kind: CpuGraphDevice())
    config = ReplayConfig(traces_dir() / "default.json", preset="tiny", cuda_graph="on", warmup_steps=2)
    session = ReplaySession(config)
    session.run()
    result = session.result()
    result.save(tmp_path / "run.json")
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["options"]["cuda_graph"] == "on"
    assert doc["cuda_graphs"]["sizes"] == [1, 2, 4, 8, 16]
    assert doc["cuda_graphs"]["capture_ns"] > 0
    loaded = RunResult.load(tmp_path / "run.json")
    assert loaded.graphs == result.graphs
    view = loaded.view(None)
    for name in ("sync", "overlap"):
        m, columns = view.paths[name], loaded.paths[name].columns
        assert m.graph_steps == int((columns["graph_rows"] > 0).sum()) > 0
        assert m.eager_steps == int((columns["graph_rows"] == 0).sum()) > 0
        assert m.graph_steps + m.eager_steps == int((columns["tokens"] > 0).sum())
    assert doc["derived"]["paths"]["sync"]["graph_steps"] == view.paths["sync"].graph_steps
    assert summary_dict(loaded, view)["cuda_graphs"]["sizes"] == [1, 2, 4, 8, 16]


def test_the_window_covers_the_step_counts_too(tmp_path):
    trace = load_trace(traces_dir() / "default.json")
    engine = Engine(trace, CpuGraphDevice(), MODEL, RunnerOptions(), cuda_graph="on")
    run = engine.replay("sync")
    record = PathRecord("sync", True, dict(run.host))
    result = RunResult(["fdoverlap"], {"device": "cpu"}, {}, {}, {}, {"sync": record})
    steps = run.host["step"]
    window = (int(steps[10]), int(steps[30]))
    inside = (steps >= window[0]) & (steps <= window[1])
    m = result.view(window).paths["sync"]
    assert m.graph_steps == int((run.host["graph_rows"][inside] > 0).sum())


def test_the_table_names_the_sizes_the_time_and_the_memory():
    g = GraphCapture((1, 2, 4, 8), 812_000_000, 10 << 30, (10 << 30) + (5 << 20), 11 << 30, (11 << 30) + (64 << 20))
    result = RunResult(["fdoverlap"], {"device": "gpu"}, {}, {}, {}, graphs=g)
    line = graph_line(result)
    assert line.startswith("CUDA graphs: decode batch sizes 1, 2, 4, 8 captured in 812.0 ms, 64.0 MiB")
    assert "allocator reserved 11,264 MiB → 11,328 MiB" in line
    assert graph_line(RunResult(["fdoverlap"], {"device": "gpu"}, {}, {}, {})).startswith("CUDA graphs: off")
    assert graph_line(RunResult(["fdoverlap"], {"device": "cpu"}, {}, {}, {})) is None
    assert GraphCapture.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_a_cpu_compare_runs_eagerly_and_says_so_in_run_json(tmp_path):
    out = tmp_path / "run.json"
    proc = run_cli("replay", "--path", "sync", "--device", "cpu", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "steps launched eagerly" in proc.stdout and "CUDA graphs" not in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["cuda_graphs"] is None and doc["options"]["cuda_graph"] == "auto"
    metrics = doc["derived"]["paths"]["sync"]
    assert metrics["graph_steps"] == 0 and metrics["eager_steps"] > 0


def test_one_forward_replayed_is_bitwise_the_eager_forward_of_its_padded_batch():
    """The GPU test's probe on the CPU: 5 decoding slots pad to 8; the replay is the padded batch's work."""
    engine = Engine(decoding_trace(running=5), CpuGraphDevice(), MODEL, RunnerOptions(), cuda_graph="on")
    engine.warm_up(3)
    out = one_forward_three_ways(engine)
    assert (out["rows"], out["size"]) == (5, 8)
    assert bitwise_equal(out["graph"], out["padded"])
    assert out["exact"].shape == out["graph"].shape and np.isfinite(out["exact"]).all()


# ----------------------------------------------------------------------------- the eager warm-up


@pytest.mark.parametrize("name", ["default", "preempt", "mixed-chunked"])
def test_the_planned_launches_are_the_batches_a_replay_runs(name):
    """The dry run of the bookkeeping (which token counts the warm-up runs) against a real replay's steps: the
    same steps, slots and prefill tokens, a prefill step's token count exactly (it is read back); a decode step
    may launch with more (#6176 caches the count of the step before, an upper bound)."""
    trace = load_trace(traces_dir() / f"{name}.json")
    plans = planned_launches(trace, MODEL.vocab_size)
    engine = Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off")
    for path in ("sync", "overlap"):
        h = _tokens(engine, path).host
        ran = h["tokens"] > 0
        assert {int(s) for s in h["step"][ran]} == {p.step for p in plans if p.token_num}
        prefills = 0
        for row in np.flatnonzero(ran):
            plan = plans[int(h["step"][row])]
            assert (plan.running, plan.prefill_tokens) == (h["running"][row], h["prefill_tokens"][row])
            assert plan.decode_only == (h["prefill_tokens"][row] == 0)
            if plan.decode_only:
                assert plan.token_num <= h["tokens"][row]
            else:
                assert plan.token_num == h["tokens"][row]
                prefills += 1
        assert prefills > 5


def test_the_eager_warmup_runs_each_eager_count_once_and_writes_no_cache():
    trace = load_trace(traces_dir() / "default.json")
    eager = _tokens(Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off"))
    engine = Engine(trace, CpuGraphDevice(), MODEL, RunnerOptions(), cuda_graph="on")
    forward = engine.forward
    counts = forward.eager_counts((p.token_num, p.decode_only) for p in planned_launches(trace, MODEL.vocab_size))
    h = eager.host
    prefill_steps = (h["tokens"] > 0) & (h["prefill_tokens"] > 0)
    assert counts == tuple(sorted({int(n) for n in h["tokens"][prefill_steps]})) and len(counts) > 3
    forward.sizes = ()  # graphs off: every count runs eagerly, the decode ones too
    assert forward.eager_counts([(3, True), (3, False), (0, False), (7, True)]) == (3, 7)
    forward.sizes = capture_sizes(trace.config.max_num_seqs)
    assert forward.eager_counts([(3, True), (16, True), (17, True), (5, False)]) == (5, 17)

    before = [(k.numpy().tobytes(), v.numpy().tobytes()) for k, v in engine.share.kv_cache]
    calls = []
    forward_once = engine.model.forward
    engine.model.forward = lambda ids, *rest: calls.append(int(ids.shape[0])) or forward_once(ids, *rest)
    warmup = forward.warm_eager(counts)
    engine.model.forward = forward_once
    assert calls == list(counts) and warmup.token_counts == counts and warmup.warmup_ns > 0
    assert before == [(k.numpy().tobytes(), v.numpy().tobytes()) for k, v in engine.share.kv_cache]
    graph = _tokens(engine, "overlap")
    assert compare_streams(trace, eager.reader.tokens, graph.reader.tokens, ("eager", "graph")).identical


def test_the_warmup_counts_are_the_eager_batches_and_every_decode_count_without_graphs():
    trace = load_trace(traces_dir() / "default.json")
    prefills = {p.token_num for p in planned_launches(trace, MODEL.vocab_size) if not p.decode_only}
    slots = trace.config.max_num_seqs
    with_graphs = Engine(trace, CpuGraphDevice(), MODEL, RunnerOptions(), cuda_graph="on").eager_warmup_counts()
    assert with_graphs == tuple(sorted(prefills))  # every decode count has a captured size
    without = Engine(trace, Device.open("cpu"), MODEL, RunnerOptions(), cuda_graph="off").eager_warmup_counts()
    assert without == tuple(sorted(prefills | set(range(1, slots + 1))))


def test_a_cpu_run_has_no_eager_warmup():
    engine = Engine(engine_traces.preemption(), CpuGraphDevice(), MODEL, RunnerOptions(), cuda_graph="on")
    engine.warm_up(2)
    assert engine.eager_warmup is None


def test_run_json_keeps_the_eager_warmup_and_the_table_names_it(tmp_path):
    w = EagerWarmup((121, 328, 2048), 731_500_000)
    result = RunResult(["fdoverlap"], {"device": "gpu"}, {}, {}, {}, eager_warmup=w)
    assert warmup_line(result) == (
        "eager warm-up: 3 token counts (121 to 2048 tokens) run once before the paths, in 731.5 ms, so no "
        "measured step pays cuBLAS's first call of its GEMM shapes"
    )
    assert warmup_line(RunResult(["fdoverlap"], {"device": "gpu"}, {}, {}, {})) is None
    assert EagerWarmup.from_dict(json.loads(json.dumps(w.to_dict()))) == w
    out = tmp_path / "run.json"
    proc = run_cli("replay", "--path", "sync", "--device", "cpu", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["eager_warmup"] is None and "eager warm-up" not in proc.stdout
    del doc["eager_warmup"]  # a run.json written before the eager warm-up
    out.write_text(json.dumps(doc))
    assert RunResult.load(out).eager_warmup is None
    doc["eager_warmup"] = w.to_dict()
    out.write_text(json.dumps(doc))
    assert RunResult.load(out).eager_warmup == w
    doc["eager_warmup"]["token_counts"] = [121, 0]
    out.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"eager_warmup\.token_counts\[1\]"):
        RunResult.load(out)
