"""The output message queue: save_output / get_output across processes, back-pressure, and clean-up."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.engine import msg_queue
from fdoverlap_cli.engine.msg_queue import END_OF_RUN, MessageQueue, queue_exists
from tests.conftest import REPO
from tests.ops import reference as ref
from tests.ops.tensors import cpu, host

READER = """
import json, sys
import numpy as np
import paddle
from fdoverlap_cli import ops
lib = ops.load()
buf = paddle.to_tensor(np.zeros(512, np.int32), place=paddle.CPUPlace())
print("ready", flush=True)
while True:
    n = int(lib.get_output(buf, int(sys.argv[1]), True).numpy()[0])
    message = buf.numpy()[: max(n, 0)].tolist()
    print(json.dumps({"status": n, "message": message}), flush=True)
    if n <= 0 or message == [0, 0]:
        break
"""


def start_reader(msqid: int) -> subprocess.Popen:
    """A reader process that prints each message it receives (JSON lines) until the end of the run."""
    reader = subprocess.Popen([sys.executable, "-c", READER, str(msqid)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    return reader


def save(ops, msqid: int, tokens, not_need_stop: bool, preempted, msg_id: int = 7) -> int:
    status = ops.save_output(
        cpu(np.asarray(tokens, np.int64).reshape(-1, 1)),
        cpu(np.array([not_need_stop])),
        cpu(np.asarray(preempted, np.int32)),
        msqid,
        msg_id,
    )
    return int(host(status)[0])


def receive(ops, msqid: int, capacity: int = 512) -> tuple[int, list[int]]:
    buf = cpu(np.zeros(capacity, np.int32))
    status = int(host(ops.get_output(buf, msqid, False))[0])
    return status, host(buf)[: max(status, 0)].tolist()


def test_round_trip_between_two_processes(ops):
    rng = np.random.default_rng(0)
    steps = []
    for k in range(5):
        bsz = 8
        steps.append((rng.integers(0, 32000, bsz), k < 4, rng.random(bsz) < 0.25))
    with MessageQueue() as queue:
        reader = start_reader(queue.msqid)
        for tokens, not_need_stop, preempted in steps:
            assert save(ops, queue.msqid, tokens, not_need_stop, preempted) == 0
        queue.send_end()
        out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    received = [json.loads(line) for line in out.splitlines()]
    want = [ref.output_message(t, n, p, 7).tolist() for t, n, p in steps] + [list(END_OF_RUN)]
    assert [r["message"] for r in received] == want
    assert received[0]["message"][0] == 7 and received[4]["message"][0] == -7  # the sign carries not_need_stop


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bsz=st.integers(1, 64), not_need_stop=st.booleans())
def test_message_contents(ops, seed, bsz, not_need_stop):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(-1, 150000, bsz)
    preempted = rng.choice([0, 1, 2], bsz, p=[0.7, 0.2, 0.1]).astype(np.int32)  # only 1 marks a slot
    msg_id = int(rng.choice([1, int(rng.integers(3, 2**31 - 1))]))  # 2 is refused
    with MessageQueue() as queue:
        assert save(ops, queue.msqid, tokens, not_need_stop, preempted, msg_id) == 0
        assert queue.pending() == 1
        status, message = receive(ops, queue.msqid)
    assert status == bsz + 2
    assert message == ref.output_message(tokens, not_need_stop, preempted, msg_id).tolist()


def test_preempted_slots_are_minus_nine(ops):
    with MessageQueue() as queue:
        save(ops, queue.msqid, [11, 12, 13, 14], True, [0, 1, 0, 2], msg_id=3)
        assert receive(ops, queue.msqid)[1] == [3, 4, 11, -9, 13, 14]  # a flag other than 1 is no marker


def test_back_pressure_loses_no_message(ops):
    bsz = 64
    with MessageQueue() as queue:
        sent = []
        for k in range(10_000):
            tokens = np.full(bsz, k)
            status = save(ops, queue.msqid, tokens, True, np.zeros(bsz), msg_id=k + 3)  # 2 is refused
            if status == 1:  # full: the caller keeps the message and retries later
                break
            assert status == 0
            sent.append(ref.output_message(tokens, True, np.zeros(bsz), k + 3).tolist())
        assert status == 1
        assert len(sent) == queue.pending() == queue.capacity_bytes() // ((bsz + 2) * 4)
        received = [receive(ops, queue.msqid)[1] for _ in sent]
        assert received == sent
        assert receive(ops, queue.msqid) == (0, [])  # nothing left, nothing lost
        assert save(ops, queue.msqid, np.zeros(bsz), True, np.zeros(bsz)) == 0  # room again


def test_get_output_statuses(ops):
    with MessageQueue() as queue:
        assert receive(ops, queue.msqid) == (0, [])  # none waiting
        save(ops, queue.msqid, np.arange(10), True, np.zeros(10))
        assert receive(ops, queue.msqid, capacity=4)[0] == -errno.E2BIG  # too small a buffer ...
        assert receive(ops, queue.msqid)[0] == 12  # ... and the message stayed queued
        msqid = queue.msqid
    assert receive(ops, msqid)[0] in (-errno.EINVAL, -errno.EIDRM)  # the queue is gone
    assert save(ops, msqid, [1], True, [0]) in (-errno.EINVAL, -errno.EIDRM)


def test_queue_is_removed_when_the_block_fails():
    with pytest.raises(RuntimeError), MessageQueue() as queue:
        msqid = queue.msqid
        assert queue_exists(msqid)
        raise RuntimeError("the run failed")
    assert not queue_exists(msqid)


def test_queue_is_removed_after_the_reader_is_killed(ops):
    with MessageQueue() as queue:
        reader = start_reader(queue.msqid)
        assert save(ops, queue.msqid, [1, 2], True, [0, 0]) == 0
        assert json.loads(reader.stdout.readline())["message"] == [7, 2, 1, 2]
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
        assert save(ops, queue.msqid, [3, 4], True, [0, 0]) == 0  # nobody reads: the queue holds it
        assert queue.pending() == 1
    assert reader.returncode == -signal.SIGKILL
    assert not queue_exists(queue.msqid)


def test_remove_is_idempotent_and_tolerates_an_already_removed_queue():
    queue = MessageQueue()
    queue.remove()
    queue.remove()
    assert not queue_exists(queue.msqid)
    assert queue.pending() == 0
    other = MessageQueue()
    assert msg_queue._lib().msgctl(other.msqid, msg_queue.IPC_RMID, None) == 0  # removed behind its back
    other.remove()
    assert not queue_exists(other.msqid)


def test_each_queue_is_new_and_private():
    with MessageQueue() as a, MessageQueue() as b:
        assert a.msqid != b.msqid
        a.send_end()
        assert (a.pending(), b.pending()) == (1, 0)
