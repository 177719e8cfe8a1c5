"""The ZMQ output path: order, the send timeout, back-pressure, clean-up, and a puller in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.engine import zmq_output
from fdoverlap_cli.engine.zmq_output import (
    SEND_TIMEOUT_MS,
    ZmqEndpoint,
    ZmqReceiver,
    ZmqSender,
    check_msg_id,
    remove_endpoint,
    require_zmq,
)
from fdoverlap_cli.errors import FdoError
from tests.conftest import REPO
from tests.ops import reference as ref
from tests.ops.tensors import cpu

BSZ = 16

PULLER = """
import json, sys
from fdoverlap_cli.engine.zmq_output import ZmqReceiver
with ZmqReceiver(sys.argv[1]) as receiver:
    print("ready", flush=True)
    messages = list(receiver.messages())
print(json.dumps(messages))
"""

# A sender that nobody pulls from, under the CLI's convention: SIGINT/SIGTERM raise Interrupted in the main thread.
BLOCKED_SENDER = """
import signal, sys
import numpy as np
from fdoverlap_cli.engine.zmq_output import ZmqEndpoint, ZmqSender
from fdoverlap_cli.errors import Interrupted

def interrupt(signum, frame):
    raise Interrupted(signum)

for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, interrupt)
try:
    with ZmqEndpoint() as endpoint, ZmqSender(endpoint.address, max_queued=2, high_water_mark=1) as sender:
        print(endpoint.folder, flush=True)
        while True:
            if sender.send(np.zeros((4, 1), np.int64), np.array([True]), np.zeros(4, np.int32)) is not None:
                print("blocked", flush=True)
except Interrupted as e:
    sys.exit(128 + e.signum)
"""


def random_steps(n: int, seed: int = 0) -> list[tuple[np.ndarray, bool, np.ndarray]]:
    """(tokens [BSZ, 1], not_need_stop, preempted_idx) per step; preempted flags 0, 1 and 2 (only 1 marks)."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(-1, 150_000, (BSZ, 1)).astype(np.int64),
            bool(rng.random() < 0.9),
            rng.choice([0, 1, 2], BSZ, p=[0.8, 0.1, 0.1]).astype(np.int32),
        )
        for _ in range(n)
    ]


def expected(steps, msg_id: int = 1) -> list[list[int]]:
    """What the SysV path would deliver for the same steps."""
    return [ref.output_message(t, n, p, msg_id).tolist() for t, n, p in steps]


def collect(receiver: ZmqReceiver) -> tuple[threading.Thread, list[list[int]]]:
    """A thread that reads every message until the end of the run."""
    got: list[list[int]] = []
    thread = threading.Thread(target=lambda: got.extend(receiver.messages()), daemon=True)
    thread.start()
    return thread, got


def sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fdoverlap-zmq-sender"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_round_trip_of_many_messages_in_order():
    steps = random_steps(2000)
    with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address) as receiver:
        reader, got = collect(receiver)
        with ZmqSender(endpoint.address, msg_id=7) as sender:
            for tokens, not_need_stop, preempted in steps:
                # The host buffers the runner passes: paddle tensors, read with .numpy().
                sender.send(cpu(tokens), cpu(np.array([not_need_stop])), cpu(preempted))
            sender.send_end()
            reader.join(timeout=60)  # the reader has everything: now the sender may close
    assert not reader.is_alive()
    assert got == expected(steps, msg_id=7)
    assert sender.sent == 2000 and sender.delivered == 2001  # the end of the run included


def test_step_output_marks_only_flag_one_and_signs_the_msg_id():
    out = zmq_output.step_output(np.array([[5], [6], [7]]), False, np.array([0, 1, 2]), 3)
    assert out.message() == [-3, 3, 5, -9, 7]
    assert [s.batch_id for s in out.slots] == [0, 1, 2]  # one record per slot, as FastDeploy sends them


def test_timeout_is_reported_when_nobody_pulls():
    assert SEND_TIMEOUT_MS == 3000  # FastDeploy's; the test shortens it
    with ZmqEndpoint() as endpoint, ZmqSender(endpoint.address, send_timeout_ms=200, high_water_mark=1) as sender:
        with pytest.raises(FdoError, match=r"the output reader took no message for 200 ms .* were not delivered"):
            for tokens, not_need_stop, preempted in random_steps(3):
                sender.send(tokens, np.array([not_need_stop]), preempted)
            sender.send_end()  # the error surfaces at the next send or here, at the end of the run
        with pytest.raises(FdoError, match="took no message"):  # and stays: nothing is dropped silently
            sender.send(*random_steps(1)[0])
        assert sender.socket_full >= 1
    assert not sender_threads()


def test_slow_puller_is_counted_as_back_pressure():
    steps = random_steps(20_000, seed=1)
    with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address, high_water_mark=1) as receiver:
        options = {"max_queued": 2, "high_water_mark": 1, "send_timeout_ms": 600_000}
        with ZmqSender(endpoint.address, **options) as sender:

            def pull_once_both_sides_are_full() -> list[list[int]]:
                # The puller reads nothing until the socket and the queue have both been full.
                while not (sender.queue_full and sender.socket_full):
                    time.sleep(0.001)
                return list(receiver.messages())

            got: list[list[int]] = []
            puller = threading.Thread(target=lambda: got.extend(pull_once_both_sides_are_full()), daemon=True)
            puller.start()
            sent, waits = [], []
            for tokens, not_need_stop, preempted in steps:
                waited = sender.send(tokens, np.array([not_need_stop]), preempted)
                sent.append((tokens, not_need_stop, preempted))
                if waited is not None:
                    waits.append(waited)
                if sender.queue_full and sender.socket_full:
                    break
            sender.send_end()
            puller.join(timeout=60)
        assert not puller.is_alive()
    assert waits and all(start <= end for start, end in waits)  # the host's waits, as the SysV sender returns them
    socket_waits = sender.socket_wait_intervals()
    assert len(socket_waits) == sender.socket_full >= 1 and (socket_waits[:, 0] <= socket_waits[:, 1]).all()
    assert len(waits) <= sender.queue_full <= len(waits) + 1  # the end of the run may have waited too
    assert sender.full_waits == sender.queue_full + sender.socket_full
    assert got == expected(sent)  # back-pressure loses nothing


def round_trip(n: int) -> Path:
    with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address) as receiver:
        reader, got = collect(receiver)
        with ZmqSender(endpoint.address) as sender:
            for step in random_steps(n):
                sender.send(*step)
            sender.send_end()
            reader.join(timeout=60)
        assert len(got) == n
    return endpoint.folder


def test_cleanup_leaves_no_socket_file_thread_or_fd():
    round_trip(2)  # the first use of ZMQ in this process opens what it keeps open
    fds = open_fds()
    folder = round_trip(50)
    assert not folder.exists()
    assert not sender_threads()
    assert open_fds() == fds


def test_cleanup_after_an_error_while_the_sender_is_blocked():
    round_trip(2)
    fds = open_fds()
    with pytest.raises(RuntimeError, match="the run failed"):  # noqa: SIM117
        with ZmqEndpoint() as endpoint, ZmqSender(endpoint.address, max_queued=2, high_water_mark=1) as sender:
            folder = endpoint.folder
            while not sender.socket_full:  # nobody pulls: the thread ends up waiting on the full socket
                sender.send(*random_steps(1)[0])
            raise RuntimeError("the run failed")
    assert not folder.exists()
    assert not sender_threads()
    assert open_fds() == fds


def test_subprocess_puller():
    steps = random_steps(500, seed=2)
    with ZmqEndpoint() as endpoint:
        puller = subprocess.Popen(
            [sys.executable, "-c", PULLER, endpoint.address], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert puller.stdout is not None and puller.stdout.readline().strip() == "ready"

        def check_alive() -> None:
            if puller.poll() is not None:
                raise FdoError(f"the puller exited with code {puller.returncode}")

        with ZmqSender(endpoint.address, check_alive) as sender:
            for tokens, not_need_stop, preempted in steps:
                sender.send(cpu(tokens), cpu(np.array([not_need_stop])), cpu(preempted))
            sender.send_end()
            out, _ = puller.communicate(timeout=60)
        assert list(endpoint.folder.iterdir()) == []  # the puller's socket file went with its socket
    assert puller.returncode == 0
    assert json.loads(out) == expected(steps)
    assert not endpoint.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_sender_waits_leaves_nothing_behind(signum):
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_SENDER], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    folder = Path(proc.stdout.readline().strip())
    assert folder.name.startswith(zmq_output.ENDPOINT_PREFIX) and folder.exists()
    assert proc.stdout.readline().strip() == "blocked"  # the queue is full: the main thread waits
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert not folder.exists()


def test_a_send_takes_no_lock_a_signal_could_leave_taken():
    """A stop signal's handler raises wherever the interpreter runs Python code; inside a queue.Queue's lock that
    left the lock taken, and close() hung on it (gdb: the main thread in put_nowait under close()). A send, on a
    free queue and on a full one, runs no Python code of queue or threading."""
    seen: set[str] = set()

    def tracer(frame, event, _arg):
        if event == "call":
            seen.add(Path(frame.f_code.co_filename).name)

    steps = random_steps(20_000, seed=3)
    with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address, high_water_mark=1) as receiver:
        with ZmqSender(endpoint.address, max_queued=2, high_water_mark=1, send_timeout_ms=600_000) as sender:

            def pull_once_the_queue_was_full() -> None:
                while not sender.queue_full:
                    time.sleep(0.001)
                for _ in receiver.messages():
                    pass

            puller = threading.Thread(target=pull_once_the_queue_was_full, daemon=True)
            puller.start()
            sys.setprofile(tracer)  # this thread's calls only
            try:
                for tokens, not_need_stop, preempted in steps:
                    sender.send(tokens, np.array([not_need_stop]), preempted)
                    if sender.queue_full:
                        break
            finally:
                sys.setprofile(None)
            sender.send_end()
            puller.join(timeout=60)
        assert sender.queue_full and not puller.is_alive()
    assert not seen & {"queue.py", "threading.py"}, seen


class _Signalled(Exception):
    pass


def test_a_signal_that_another_thread_takes_stops_a_waiting_receiver():
    """A signal whose C handler ran outside the main thread's poll (here in another thread; in the reader, also
    just before the poll) must still stop a receive with no timeout. A reader whose tool died used to stay in
    zmq_poll(-1) for good with SIGUSR2's handler pending (gdb: Handlers[12].tripped = 1); a message the thread
    pushes 5 s later is what ended the wait then."""
    zmq = require_zmq()

    def raise_signalled(signum: int, _frame: object) -> None:
        raise _Signalled(signum)

    def signal_then_push(address: str) -> None:
        time.sleep(0.2)  # the main thread is in receive() by then
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)  # the handler's flag set, in this thread
        time.sleep(5)
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(address)
        push.send_pyobj(zmq_output._end_of_run())
        push.close()
        context.term()

    previous = signal.signal(signal.SIGUSR2, raise_signalled)
    try:
        with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address) as receiver:
            thread = threading.Thread(target=signal_then_push, args=(endpoint.address,), daemon=True)
            thread.start()
            start = time.monotonic()
            with pytest.raises(_Signalled):
                receiver.receive()
            assert time.monotonic() - start < 2.0
            thread.join(10)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_remove_endpoint_removes_only_an_endpoint_folder(tmp_path):
    other = tmp_path / "keep"
    other.mkdir()
    remove_endpoint(f"ipc://{other}/output")
    assert other.exists()
    endpoint = ZmqEndpoint()
    remove_endpoint(endpoint.address)  # the reader's clean-up when the tool died
    assert not endpoint.exists()
    endpoint.remove()  # idempotent


def test_receiver_refuses_what_is_not_a_step_output():
    zmq = require_zmq()
    with ZmqEndpoint() as endpoint, ZmqReceiver(endpoint.address) as receiver:
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(endpoint.address)
        push.send_pyobj({"tokens": [1, 2]})
        push.send(b"not a pickle")
        with pytest.raises(FdoError, match="delivered a dict, not a step's output"):
            receiver.receive(timeout_ms=10_000)
        with pytest.raises(FdoError, match="12 bytes that do not unpickle"):
            receiver.receive(timeout_ms=10_000)
        assert receiver.receive(timeout_ms=0) is None
        push.close()
        context.term()


@pytest.mark.parametrize(("msg_id", "match"), [(0, "must be positive"), (-3, "must be positive"), (2, "must not be 2")])
def test_msg_ids_save_output_refuses_are_refused(msg_id, match):
    with pytest.raises(FdoError, match=match):
        check_msg_id(msg_id)
    with ZmqEndpoint() as endpoint, pytest.raises(FdoError, match=match):
        ZmqSender(endpoint.address, msg_id=msg_id)
    assert not sender_threads()


def test_missing_pyzmq_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "zmq", None)  # import zmq raises ImportError
    with pytest.raises(FdoError) as info:
        require_zmq()
    assert "pyzmq is not installed" in str(info.value) and "pip install" in str(info.value)
    assert "\n" not in str(info.value)


def test_receiver_removes_its_socket_file_and_a_bind_that_fails_is_one_error(tmp_path):
    with ZmqEndpoint() as endpoint:
        socket_file = endpoint.folder / "output"
        with ZmqReceiver(endpoint.address):
            assert socket_file.exists()
        assert not socket_file.exists()
    with pytest.raises(FdoError, match=r"cannot bind the output socket ipc://.*/missing/output"):
        ZmqReceiver(f"ipc://{tmp_path}/missing/output")
