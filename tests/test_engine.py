"""The replay engine on the CPU: both paths emit the same tokens, and each hazard of the overlap is caught."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from fdoverlap_cli.engine.bookkeeping import digest
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import ModelRunner, RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams, token_steps
from fdoverlap_cli.errors import CheckFailed, FdoError
from fdoverlap_cli.measure import schema
from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.resources import traces_dir
from tests import engine_traces
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("ops")


def _engine(trace, **options) -> Engine:
    return Engine(trace, Device.open("cpu"), model_config("tiny"), RunnerOptions(**options))


def _both(trace, **options):
    engine = _engine(trace, **options)
    return engine.replay("sync"), engine.replay("overlap")


def _assert_complete_and_identical(trace, sync, overlap) -> None:
    for run in (sync, overlap):
        assert run.complete
        check = check_against_trace(trace, run.reader.tokens, run.reader.markers)
        assert check.ok, (run.path, check.problems)
        assert run.reader.anomaly_count == 0, run.reader.anomalies
    identity = compare_streams(trace, sync.reader.tokens, overlap.reader.tokens, ("sync", "overlap"))
    assert identity.identical, identity.first_difference


@pytest.mark.parametrize("name", sorted(engine_traces.ALL))
def test_paths_identical_on_hazard_traces(name):
    trace = engine_traces.ALL[name]()
    sync, overlap = _both(trace)
    _assert_complete_and_identical(trace, sync, overlap)


# The bundled traces: tests/test_runners.py (every runner and output path).


def test_reader_tokens_follow_the_trace():
    trace = engine_traces.preemption()
    engine = _engine(trace)
    sync = engine.replay("sync")
    saved = {trace.requests[r].id: d for r, d in engine.book.finished.items()}  # what the runner saved
    tokens = sync.reader.tokens
    assert {rid: len(t) for rid, t in tokens.items()} == {r.id: r.output_len for r in trace.requests}
    # a length stop writes the end token last, as FastDeploy does
    assert all(t[-1] == trace.config.eos_token_id for t in tokens.values())
    # the reader's streams are the tokens the engine saved
    assert {rid: digest(t) for rid, t in tokens.items()} == saved


# ----------------------------------------------------------------------------- hazard: late not_need_stop


def test_overlap_runs_one_empty_step_after_a_drain_and_loses_nothing():
    """#6176: the host's not_need_stop is a step late on the overlap path (develop has none: test_runners.py)."""
    trace = engine_traces.drain_then_arrival()
    sync, overlap = _both(trace, design="pr6176")
    _assert_complete_and_identical(trace, sync, overlap)
    sync_steps = sync.host["step"].tolist()
    overlap_steps = overlap.host["step"].tolist()
    assert 3 not in sync_steps  # the sync path idles once every slot has stopped
    assert overlap_steps == sorted(set(sync_steps) | {3})  # the overlap path's view is a step late
    empty = overlap.host["tokens"][overlap_steps.index(3)]
    assert empty == 0
    assert overlap.reader.messages == sync.reader.messages + 1


def test_a_stale_stop_flag_that_clears_a_fresh_insert_is_caught(monkeypatch):
    """If save(k) let step k's 'all stopped' override an insert made after step k launched, a step is skipped."""
    original = ModelRunner.save_model_output

    def stale(self, pending):
        pending.insert_epoch = self.insert_epoch  # forget that an insert happened since the step launched
        return original(self, pending)

    monkeypatch.setattr(ModelRunner, "save_model_output", stale)
    trace = engine_traces.arrival_right_after_drain()
    overlap = _engine(trace, design="pr6176").replay("overlap")
    check = check_against_trace(trace, overlap.reader.tokens, overlap.reader.markers)
    assert not check.ok
    assert any("r1" in p for p in check.problems)


# ----------------------------------------------------------------------------- hazard: preemption markers


def _marker_steps(run):
    executed = run.host["step"].tolist()
    return sorted((executed[msg], slot) for msg, slot, _rid in run.reader.markers)


def test_preemption_markers_go_out_with_their_step():
    trace = engine_traces.preemption()
    sync, overlap = _both(trace)
    expected = sorted((k, s) for k, step in enumerate(trace.steps) for s in step.preempt)
    assert _marker_steps(sync) == expected
    assert _marker_steps(overlap) == expected


def test_without_the_snapshot_overlap_sends_markers_a_step_early():
    trace = engine_traces.preemption()
    overlap = _engine(trace, design="pr6176", snapshot_preempted=False).replay("overlap")
    expected = sorted((k, s) for k, step in enumerate(trace.steps) for s in step.preempt)
    assert _marker_steps(overlap) != expected
    check = check_against_trace(trace, overlap.reader.tokens, overlap.reader.markers)
    assert not check.ok  # the marker overwrote r1's last token before the preemption


def test_the_step_table_counts_the_tokens_the_messages_carried():
    """Without the snapshot a marker goes out in a token's place: `emitted` counts what the reader got."""
    trace = engine_traces.preemption()
    overlap = _engine(trace, design="pr6176", snapshot_preempted=False).replay("overlap")
    h = overlap.host
    assert h["emitted"].sum() == sum(map(len, overlap.reader.tokens.values())) < h["generated"].sum()
    sync = _engine(trace).replay("sync")
    assert sync.host["emitted"].sum() == sync.host["generated"].sum() == sum(map(len, sync.reader.tokens.values()))


def test_a_hazard_run_says_so_and_counts_what_was_emitted():
    proc = run_cli(
        "compare", "--device", "cpu", "--warmup", "1", "--runner", "pr6176", "--no-snapshot-preempted",
        str(traces_dir() / "preempt.json"),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 1  # the tokens differ: the hazard, shown on purpose
    s = json.loads(proc.stdout)
    assert s["paths"]["overlap"]["metrics"]["tokens"] < s["paths"]["sync"]["metrics"]["tokens"]
    assert any("reproduces a known hazard" in note for note in s["notes"])


@pytest.mark.parametrize("design", ["pr6176", "develop"])
def test_each_wait_is_tagged_with_its_kind(design):
    run = _engine(engine_traces.preemption(), design=design, token_count="sync").replay("sync")
    kinds = [schema.WAIT_KINDS[c] for c in run.host["wait_kind"].tolist()]
    steps = len(run.host["step"])
    assert kinds.count(Kind.EVENT_WAIT) == steps  # every save waits for its event
    assert kinds.count(Kind.READBACK) == steps  # --token-count sync reads the count back every step
    assert kinds.count(Kind.TOKEN_NUM) == (steps if design == "develop" else 0)  # develop's token_num_event
    assert set(kinds) <= {Kind.EVENT_WAIT, Kind.READBACK, Kind.BACKPRESSURE, Kind.TOKEN_NUM}


# ----------------------------------------------------------------------------- hazard: pinned buffer reuse


def test_overlap_copies_into_the_pinned_buffer_only_after_the_previous_save_read_it():
    trace = engine_traces.chunked_prefill()
    overlap = _engine(trace).replay("overlap")
    h = overlap.host
    for prev in range(len(h["step"]) - 1):
        assert h["save_end"][prev] <= h["post_start"][prev + 1]


def test_copying_before_the_previous_save_corrupts_tokens(monkeypatch):
    """1(k) 2(k) 3(k-1) reuses the one pinned sampled_token_ids buffer too early: tokens of k-1 are lost."""

    def wrong_order(self, k):
        fwd = self.preprocess_and_execute_model(k)
        new = self.postprocess(fwd) if fwd is not None else None
        if self.pending is not None:
            self.save_model_output(self.pending)
        self.pending = new
        return fwd is not None

    monkeypatch.setattr(ModelRunner, "execute_model_overlap", wrong_order)
    trace = engine_traces.chunked_prefill()
    engine = _engine(trace)
    sync = engine.replay("sync")
    overlap = engine.replay("overlap")
    assert not compare_streams(trace, sync.reader.tokens, overlap.reader.tokens, ("sync", "overlap")).identical


# ----------------------------------------------------------------------------- hazard: predicted token count


@pytest.mark.parametrize("name", sorted(engine_traces.ALL))
def test_predicted_token_count_equals_the_real_one(name):
    trace = engine_traces.ALL[name]()
    engine = _engine(trace, token_count="predict", verify_token_count=True)
    for path in ("sync", "overlap"):
        assert engine.replay(path).complete


@pytest.mark.parametrize("design", ["pr6176", "develop"])
def test_a_wrong_prediction_is_caught(monkeypatch, design):
    """The host's own count off by one: --verify-token-count reads the batch back and says so."""
    from fdoverlap_cli.engine import bookkeeping

    launch = bookkeeping.Bookkeeping.launch

    def off_by_one(self, k):
        plan = launch(self, k)
        if plan.decode_only and plan.token_num:
            plan.token_num -= 1
        return plan

    monkeypatch.setattr(bookkeeping.Bookkeeping, "launch", off_by_one)
    trace = engine_traces.preemption()
    with pytest.raises(CheckFailed, match=r"step \d+: the host (predicted|counted) \d+ tokens but the batch has"):
        _engine(trace, design=design, verify_token_count=True).replay("overlap")


def test_token_steps_follow_the_schedule():
    steps = token_steps(engine_traces.chunked_prefill())
    assert steps == {"r0": [2, 3, 4], "r1": [0, 1, 2, 3, 4]}


# ----------------------------------------------------------------------------- the reader process


def test_a_dead_reader_is_reported_not_waited_for():
    trace = engine_traces.drain_then_arrival()
    engine = _engine(trace)

    def kill_reader(k):
        if k == 1:
            for pid in _reader_pids():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(FdoError, match="output reader"):
        engine.replay("sync", on_step=kill_reader)
    assert not _reader_pids()


def _reader_pids() -> list[int]:
    """Live output-reader processes started by this test process."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if b"fdoverlap_cli.engine.reader" in cmd and ppid == os.getpid() and state != "Z":
            pids.append(int(entry))
    return pids


# ----------------------------------------------------------------------------- the command


def test_compare_on_the_default_trace(tmp_path):
    out = tmp_path / "run.json"
    proc = run_cli("compare", "--sync", "--overlap", "--device", "cpu", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "tokens identical" in proc.stdout
    assert "CPU run" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["identity"]["identical"] is True
    assert set(doc["paths"]) == {"sync", "overlap"}
    assert doc["complete"] is True


def test_replay_json_summary(tmp_path):
    proc = run_cli("replay", "--path", "sync", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert list(summary["paths"]) == ["sync"]
    assert summary["paths"]["sync"]["output_check"]["ok"] is True


def test_fused_layers_emit_the_tokens_of_the_op_by_op_model():
    trace = engine_traces.chunked_prefill()
    device, model = Device.open("cpu"), model_config("tiny")
    fused = Engine(trace, device, model, RunnerOptions(), fused_layers=True).replay("overlap")
    separate = Engine(trace, device, model, RunnerOptions(), fused_layers=False).replay("overlap")
    assert compare_streams(trace, fused.reader.tokens, separate.reader.tokens, ("fused", "separate")).identical


def test_an_op_failing_mid_run_names_the_step_and_the_op(monkeypatch):
    """A CUDA error surfaces from an op as an exception; the run reports it with the step, on one line."""
    trace = engine_traces.drain_then_arrival()
    engine = _engine(trace)
    real = engine.ops.update_inputs
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(
                "update_inputs: CUDA error 700 (an illegal memory access was encountered)\n  [token_update.cc:88]"
            )
        return real(*args)

    monkeypatch.setattr(engine.ops, "update_inputs", failing)
    with pytest.raises(FdoError, match=r"^step 2: OSError: update_inputs: CUDA error 700") as info:
        engine.replay("sync")
    assert "\n" not in str(info.value)
    assert not _reader_pids()


def test_write_host_fills_the_tensor_in_place():
    device = Device.open("cpu")
    tensor = device.host_tensor(np.zeros(4, dtype=np.int32))
    ptr = tensor.data_ptr()
    device.write_host(tensor, np.array([3, 0, 1, 9]))
    assert tensor.data_ptr() == ptr and tensor.place.is_cpu_place()
    assert tensor.numpy().tolist() == [3, 0, 1, 9]
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        device.write_host(tensor, np.zeros(3, dtype=np.int32))
