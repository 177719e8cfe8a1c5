"""The two runners (develop, pr6176) and the two output paths (msgqueue, zmq) on the CPU: the same tokens
everywhere, the develop runner's own hazards caught, and the ZMQ path's faults handled like the SysV path's."""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from fdoverlap_cli.engine import zmq_output
from fdoverlap_cli.engine.designs import Develop
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.replay import Engine
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams
from fdoverlap_cli.errors import CheckFailed, FdoError, Interrupted, OptionError
from fdoverlap_cli.measure import schema
from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.trace import Insert, Request, Step, Trace, load_trace
from tests import engine_traces
from tests.conftest import REPO
from tests.test_engine import _reader_pids

pytestmark = pytest.mark.usefixtures("ops")

DESIGNS = ("develop", "pr6176")
IPCS = ("msgqueue", "zmq")
PROBE = Path(__file__).parent / "probe"  # its pull gate: FDOVERLAP_TEST_PULL_GATE


def _engine(trace: Trace, output_ipc: str = "zmq", **options) -> Engine:
    return Engine(trace, Device.open("cpu"), model_config("tiny"), RunnerOptions(**options), output_ipc=output_ipc)


def _checked_tokens(trace: Trace, run) -> dict[str, list[int]]:
    assert run.complete
    check = check_against_trace(trace, run.reader.tokens, run.reader.markers)
    assert check.ok, (run.path, check.problems)
    assert run.reader.anomaly_count == 0, run.reader.anomalies
    return run.reader.tokens


def assert_identical_everywhere(trace: Trace, designs=DESIGNS, ipcs=IPCS, **options) -> None:
    """Every runner × output path × path emits the tokens of the first one (one engine per runner)."""
    reference = None
    for design in designs:
        engine = _engine(trace, design=design, **options)
        for ipc in ipcs:
            engine.output_ipc = ipc
            for path in ("sync", "overlap"):
                tokens = _checked_tokens(trace, engine.replay(path))
                if reference is None:
                    reference = tokens
                identity = compare_streams(trace, reference, tokens, ("first", f"{design}/{ipc}/{path}"))
                assert identity.identical, identity.first_difference


def _waits(run, kind: str) -> list[int]:
    """The iteration steps of the run's waits of `kind`."""
    return [s for s, c in zip(run.host["wait_step"].tolist(), run.host["wait_kind"].tolist(), strict=True)
            if schema.WAIT_KINDS[c] == kind]  # fmt: skip


# ----------------------------------------------------------------------------- token identity


@pytest.mark.parametrize("name", sorted(engine_traces.ALL))
def test_runners_and_output_paths_emit_the_same_tokens_on_hazard_traces(name):
    assert_identical_everywhere(engine_traces.ALL[name]())


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(traces_dir().glob("*.json")), ids=lambda p: p.stem)
def test_runners_and_output_paths_emit_the_same_tokens_on_bundled_traces(path):
    assert_identical_everywhere(load_trace(path), verify_token_count=True)


@pytest.mark.parametrize("copy_stream", ["compute", "separate"])
@pytest.mark.parametrize("token_count", ["predict", "sync"])
@pytest.mark.parametrize("name", ["preemption", "chunked_prefill"])
def test_runners_emit_the_same_tokens_under_every_option(name, token_count, copy_stream):
    options = {"token_count": token_count, "copy_stream": copy_stream, "verify_token_count": token_count == "predict"}
    assert_identical_everywhere(engine_traces.ALL[name](), ipcs=("zmq",), **options)


def test_the_develop_runner_refuses_to_go_without_the_snapshot():
    with pytest.raises(OptionError, match="snapshot_preempted: the develop runner always snapshots"):
        RunnerOptions(design="develop", snapshot_preempted=False)
    with pytest.raises(OptionError, match="design: expected develop or pr6176"):
        RunnerOptions(design="v2")


# ----------------------------------------------------------------------------- the develop runner


def test_develop_idles_on_the_hosts_own_view_no_empty_step_after_a_drain():
    """No not_need_stop: the overlap path does not run the empty step #6176 runs after a drain."""
    trace = engine_traces.drain_then_arrival()
    engine = _engine(trace, design="develop")
    sync, overlap = engine.replay("sync"), engine.replay("overlap")
    assert sync.host["step"].tolist() == overlap.host["step"].tolist()
    assert 3 not in overlap.host["step"].tolist()
    assert sync.reader.messages == overlap.reader.messages
    assert sync.reader.stop_messages == overlap.reader.stop_messages == 0  # every message carries +msg_id


def test_develop_packs_an_upper_bound_and_reads_back_only_for_a_prefill():
    trace = engine_traces.preemption()
    run = _engine(trace, design="develop").replay("overlap")
    h = run.host
    packed, running = h["tokens"].tolist(), h["running"].tolist()
    assert all(p >= r for p, r in zip(packed, running, strict=True))
    assert any(p > r for p, r, pre in zip(packed, running, h["prefill_tokens"].tolist(), strict=True) if not pre)
    prefill_steps = [k for k, step in enumerate(trace.steps) if step.insert]
    assert _waits(run, Kind.READBACK) == prefill_steps  # decode-only steps use the cached count
    assert _waits(run, Kind.TOKEN_NUM) == h["step"].tolist()  # token_num_event in every step that ran


def test_a_too_small_upper_bound_is_caught(monkeypatch):
    """A prediction one below the running slots would drop a token from the packing: a failed check, not a run."""
    stage = Develop.token_num_stage

    def one_short(self, k):
        stage(self, k)
        self.cached -= 1

    monkeypatch.setattr(Develop, "token_num_stage", one_short)
    with pytest.raises(CheckFailed, match=r"step \d+: the predicted upper bound of \d+ tokens is below the batch's"):
        _engine(engine_traces.preemption(), design="develop").replay("overlap")


def _no_prefill_fallback(monkeypatch) -> None:
    """Treat every batch as decode-only when choosing the count (the cached count, where there is one)."""
    token_count = Develop.token_count

    def as_decode(self, k, plan):
        return token_count(self, k, dataclasses.replace(plan, decode_only=True))

    monkeypatch.setattr(Develop, "token_count", as_decode)


def test_a_prefill_under_a_cached_count_resets_it(monkeypatch):
    """#6753: the insert resets the cached count, so even without the prefill's own fallback the step reads
    its count back, and the tokens are the #6176 runner's."""
    _no_prefill_fallback(monkeypatch)
    trace = engine_traces.chunked_prefill()  # r0's chunks arrive while r1 decodes under a cached count
    reference = _engine(trace, design="pr6176").replay("overlap").reader.tokens
    run = _engine(trace, design="develop").replay("overlap")
    assert compare_streams(trace, reference, _checked_tokens(trace, run), ("pr6176", "develop")).identical
    assert _waits(run, Kind.READBACK) == [k for k, step in enumerate(trace.steps) if step.insert]


def test_a_prefill_under_a_stale_cached_count_is_caught(monkeypatch):
    """The #6753 bug itself (no reset, no fallback): the stale count is below the batch, and the check says so."""
    _no_prefill_fallback(monkeypatch)
    after_insert = Develop.after_insert

    def keep_cache(self, step, preempt):
        cached = self.cached
        after_insert(self, step, preempt)
        self.cached = cached

    monkeypatch.setattr(Develop, "after_insert", keep_cache)
    with pytest.raises(CheckFailed, match="the packing would drop tokens"):
        _engine(engine_traces.chunked_prefill(), design="develop").replay("overlap")


# ----------------------------------------------------------------------------- the ZMQ path's faults


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The endpoint's and the reader's temporary folders land here, so what is left is what this test left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fdoverlap-zmq-sender"]


def _assert_nothing_left(tmp: Path) -> None:
    assert sorted(tmp.iterdir()) == []  # no endpoint folder or socket file, no reader folder
    assert not _sender_threads()
    assert not _reader_pids()


def test_zmq_reader_that_dies_is_reported_and_everything_goes(private_tmp):
    engine = _engine(engine_traces.drain_then_arrival(), design="develop")

    def kill_reader(k):
        if k == 1:
            for pid in _reader_pids():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(FdoError, match="output reader"):
        engine.replay("overlap", on_step=kill_reader)
    _assert_nothing_left(private_tmp)


def test_zmq_interrupted_mid_run_leaves_no_socket_thread_or_child(private_tmp):
    engine = _engine(engine_traces.preemption(), design="develop")

    def interrupt(k):
        if k == 2:
            raise Interrupted(signal.SIGINT)

    with pytest.raises(Interrupted):
        engine.replay("overlap", on_step=interrupt)
    assert engine.runs[-1].complete is False and len(engine.runs[-1].host["step"]) == 3
    _assert_nothing_left(private_tmp)


def _wide_trace(steps: int = 40) -> Trace:
    """256 slots, two of them decoding: each message is tens of KB, so a stalled reader's socket fills in a
    few steps."""
    config = dataclasses.replace(engine_traces.CONFIG, max_num_seqs=256, num_kv_blocks=1024)
    requests = (Request("r0", 4, steps), Request("r1", 3, steps - 2))
    body = [Step(insert=(Insert("r0", 0, 0, 4), Insert("r1", 200, 0, 3)))] + [Step()] * steps
    return Trace(config=config, requests=requests, steps=tuple(body), meta={"source": "test:wide"})


def _gated_reader(monkeypatch, tmp: Path) -> tuple[Path, list]:
    """The reader takes nothing until the gate file exists; the queue holds 2 steps, the sockets 1 message."""
    gate = tmp.parent / f"{tmp.name}-gate"
    python_path = os.pathsep.join(p for p in (str(PROBE), str(REPO), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", python_path)
    monkeypatch.setenv("FDOVERLAP_TEST_PULL_GATE", str(gate))
    monkeypatch.setattr(zmq_output, "MAX_QUEUED", 2)
    monkeypatch.setattr(zmq_output, "HIGH_WATER_MARK", 1)
    senders: list = []
    real = zmq_output.ZmqSender

    class Recorded(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            senders.append(self)

    monkeypatch.setattr(zmq_output, "ZmqSender", Recorded)
    return gate, senders


def test_a_stalled_pull_side_is_back_pressure_counted_as_a_host_wait_in_save(private_tmp, monkeypatch):
    gate, senders = _gated_reader(monkeypatch, private_tmp)

    def open_gate_once_save_waited():
        while not (senders and senders[0].queue_full):
            threading.Event().wait(0.001)
        gate.touch()

    watcher = threading.Thread(target=open_gate_once_save_waited, daemon=True)
    watcher.start()
    trace = _wide_trace()
    run = _engine(trace, design="develop").replay("overlap")
    watcher.join(timeout=5)
    _checked_tokens(trace, run)  # back-pressure loses nothing
    sender = senders[0]
    assert sender.socket_full >= 1 and sender.queue_full >= 1
    assert run.full_queue_waits == sender.full_waits
    h = run.host
    waits = [(s, e) for s, e, c in zip(h["wait_start"], h["wait_end"], h["wait_kind"], strict=True)
             if schema.WAIT_KINDS[c] == Kind.BACKPRESSURE]  # fmt: skip
    # each of save's waits on the full queue is a host wait (the end of the run, after the loop, may wait too)
    assert 1 <= len(waits) <= sender.queue_full <= len(waits) + 1
    saves = list(zip(h["save_start"], h["save_end"], strict=True))
    assert all(any(a <= s <= e <= b for a, b in saves) for s, e in waits)  # inside save: its exposure category
    _assert_nothing_left(private_tmp)


def test_a_reader_that_never_pulls_is_a_send_timeout_error(private_tmp, monkeypatch):
    _gated_reader(monkeypatch, private_tmp)  # the gate never opens
    monkeypatch.setattr(zmq_output, "SEND_TIMEOUT_MS", 300)
    with pytest.raises(FdoError, match=r"took no message for 300 ms \(ZMQ send timeout"):
        _engine(_wide_trace(), design="develop").replay("overlap")
    _assert_nothing_left(private_tmp)
