"""The two ways save_model_output hands a step's tokens to the output reader, opened and closed per replay.

    msgqueue  save_output (msgsnd) on a private SysV queue on the main thread (FastDeploy's default)
    zmq       a queue.SimpleQueue and a daemon sender thread, PUSH to the reader's PULL on a private ipc:// endpoint
              (FastDeploy's FD_USE_GET_SAVE_OUTPUT_V1; engine/zmq_output.py)

`open_output(kind, trace, ops)` is a `with` block yielding an `OutputChannel`: the reader process (not
started yet), the sender the runner calls, and `finish()` (the end of the run, then what the reader rebuilt).
On exit, whatever happened: the reader is stopped, the sender thread joined and its socket closed, and the
queue or the endpoint (its folder and socket file) removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fdoverlap_cli.engine.reader import OutputReader, OutputSender, ReaderResult
from fdoverlap_cli.trace import Trace

MSGQUEUE = "msgqueue"
ZMQ = "zmq"
OUTPUT_IPCS = (MSGQUEUE, ZMQ)


@dataclass
class OutputChannel:
    """One replay's output path: the reader process, the sender save_model_output calls, the end of the run."""

    kind: str
    reader: OutputReader
    sender: Any  # send(sampled, not_need_stop, preempted) -> the (start, end) ns save waited, or None; full_waits
    send_end: Callable[[], None]

    def finish(self) -> ReaderResult:
        """Send the end of the run, wait for the reader, and return what it rebuilt (a failed send raises)."""
        return self.reader.finish(self.send_end)

    @property
    def full_waits(self) -> int:
        """Sends that met back-pressure: a full SysV queue, or (zmq) a full queue or a full socket."""
        return int(self.sender.full_waits)


@contextlib.contextmanager
def open_output(kind: str, trace: Trace, ops: Any) -> Iterator[OutputChannel]:
    """The output path `kind` (one of OUTPUT_IPCS) of one replay; everything it made is gone on exit."""
    if kind == ZMQ:
        with _zmq(trace) as channel:
            yield channel
        return
    from fdoverlap_cli.engine.msg_queue import MessageQueue

    with MessageQueue() as queue:
        reader = OutputReader(trace, msqid=queue.msqid)
        try:
            yield OutputChannel(MSGQUEUE, reader, OutputSender(ops, queue.msqid, reader), queue.send_end)
        finally:
            reader.stop()


@contextlib.contextmanager
def _zmq(trace: Trace) -> Iterator[OutputChannel]:
    from fdoverlap_cli.engine import zmq_output

    with zmq_output.ZmqEndpoint() as endpoint:
        reader = OutputReader(trace, zmq_address=endpoint.address)
        try:
            # Module attributes read here, not defaults bound at import: a test can make the queue and socket small.
            sender = zmq_output.ZmqSender(
                endpoint.address,
                reader.check_alive,
                max_queued=zmq_output.MAX_QUEUED,
                send_timeout_ms=zmq_output.SEND_TIMEOUT_MS,
                high_water_mark=zmq_output.HIGH_WATER_MARK,
            )
        except BaseException:
            reader.stop()
            raise
        try:
            yield OutputChannel(ZMQ, reader, sender, sender.send_end)
        finally:
            try:
                reader.stop()  # first: the sender closes (linger 0) once the reader has all it will get
            finally:
                sender.close()
