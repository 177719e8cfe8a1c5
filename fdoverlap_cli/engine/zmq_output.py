"""The ZMQ output path (FastDeploy's `FD_USE_GET_SAVE_OUTPUT_V1`), beside the SysV message queue.

    save (main thread) ──put──► queue.SimpleQueue ──► sender thread: pickle, PUSH ──► ipc://<private folder>/output
                                                                                 ──► PULL (the output reader)

save_model_output hands `ZmqSender.send` the same three host buffers it hands the SysV sender; the main
thread copies them into one `StepOutput` (the SysV message's fields, split per slot as FastDeploy's
`_build_stream_transfer_data` splits them) and puts it on the queue; a daemon thread pickles it (as
`send_pyobj` does, holding the GIL) and sends it. A message the reader does not take within the send
timeout (3000 ms, FastDeploy's) is an error raised on the main thread at the next send or at the end of
the run, never a silent drop. Back-pressure is counted: the main thread waits when MAX_QUEUED steps are
queued and not yet taken (the interval `send` returns, as the SysV sender returns its wait on a full
queue), the sender thread when the socket is full (`socket_wait_intervals`). The main thread takes no
Python-level lock: a queue.Queue's lock, taken when a stop signal's handler raised, stayed taken and hung
close(); a SimpleQueue's put is one C call, and the bound is a count of puts against a count of takes.

Life cycle: `ZmqEndpoint` owns a private folder (mode 0700) and the address in it, and removes both on
exit from its `with` block, whatever happened; the reader binds the PULL there (`ZmqReceiver`, which
yields the decoded messages the SysV reader loop consumes) and the engine's `ZmqSender` connects the
PUSH. Closing joins the thread and closes the sockets (linger 0) and the context. Only this user can
reach the socket, so unpickling what arrives on it is safe.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from fdoverlap_cli import stop_signals
from fdoverlap_cli.engine.msg_queue import END_OF_RUN, FULL_QUEUE_SLEEP_S
from fdoverlap_cli.errors import ExitCode, FdoError

SEND_TIMEOUT_MS = 3000  # FastDeploy's SNDTIMEO on the worker's PUSH socket
MAX_QUEUED = 64  # steps on the queue before save waits (FastDeploy's queue is unbounded)
HIGH_WATER_MARK = 1000  # ZMQ's default SNDHWM/RCVHWM, in messages
PREEMPTED_TOKEN = -9  # as save_output writes it (the SysV reader's PREEMPTED)
PREEMPTED_FLAG = 1  # the preempted_idx value that marks a slot
RESERVED_MSG_ID = 2  # a leading -2 means "no message" to FastDeploy's reader: save_output refuses it
ENDPOINT_PREFIX = "fdoverlap-zmq-"
_POLL_MS = 50  # how often a waiting sender thread looks at the stop flag, and the reader at its signals
_MAX_IPC_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def require_zmq() -> ModuleType:
    """Import pyzmq, or fail with one line that says how to install it."""
    try:
        import zmq
    except ImportError as e:
        raise FdoError(
            f"pyzmq is not installed ({e}); install it with: pip install -e . (or pip install pyzmq)"
        ) from None
    return zmq


def check_msg_id(msg_id: int) -> int:
    """save_output's rule for msg_id: positive (its sign carries not_need_stop) and not 2."""
    if msg_id <= 0:
        raise FdoError(f"msg_id must be positive (its sign carries not_need_stop), got {msg_id}")
    if msg_id == RESERVED_MSG_ID:
        raise FdoError(f"msg_id must not be {RESERVED_MSG_ID} (a leading -{RESERVED_MSG_ID} means 'no message')")
    return msg_id


# --------------------------------------------------------------------------- what travels


@dataclass
class SlotOutput:
    """One slot's tokens of a step (FastDeploy sends one such record per slot)."""

    batch_id: int
    tokens: np.ndarray  # int64[1]: the token, -1 if the slot produced nothing, -9 if it was preempted


@dataclass
class StepOutput:
    """One step's output: the fields of save_output's message. msg_id 0 with no slots ends the run."""

    msg_id: int  # +msg_id while not_need_stop, else -msg_id
    slots: list[SlotOutput]
    queued_ns: int  # CLOCK_MONOTONIC when save put it on the queue (one clock for every process)

    def message(self) -> list[int]:
        """The SysV message of the same step: [±msg_id, bsz, token_0 .. token_{bsz-1}]."""
        return [self.msg_id, len(self.slots), *(int(s.tokens[0]) for s in self.slots)]


def step_output(tokens: np.ndarray, not_need_stop: bool, preempted: np.ndarray, msg_id: int) -> StepOutput:
    """The step's output as save_output builds its message: -9 where preempted is exactly 1."""
    marked = np.asarray(preempted).reshape(-1) == PREEMPTED_FLAG
    body = np.where(marked, PREEMPTED_TOKEN, tokens.reshape(-1)).astype(np.int64, copy=False)  # a new array
    slots = [SlotOutput(b, body[b : b + 1]) for b in range(len(body))]
    return StepOutput(msg_id if not_need_stop else -msg_id, slots, time.monotonic_ns())


def _end_of_run() -> StepOutput:
    return StepOutput(END_OF_RUN[0], [], time.monotonic_ns())


def _host_array(buffer: Any) -> np.ndarray:
    """A host buffer's values as a NumPy array (a pinned paddle tensor is read with .numpy(): a copy)."""
    return np.asarray(buffer.numpy() if hasattr(buffer, "numpy") else buffer)


# --------------------------------------------------------------------------- the endpoint


class ZmqEndpoint:
    """A private folder and an `ipc://` address in it, new per run; both removed on exit from the `with` block."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=ENDPOINT_PREFIX))
        path = self.folder / "output"
        if len(str(path).encode()) > _MAX_IPC_PATH:
            self.remove()
            raise FdoError(
                f"the output socket path {path} is longer than {_MAX_IPC_PATH} bytes; set TMPDIR to a shorter folder"
            )
        self.address = f"ipc://{path}"

    def __enter__(self) -> ZmqEndpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def exists(self) -> bool:
        return self.folder.exists()

    def remove(self) -> None:
        """Remove the folder and the socket file in it; idempotent."""
        shutil.rmtree(self.folder, ignore_errors=True)


def remove_endpoint(address: str) -> None:
    """Remove an endpoint's folder by its address (for a reader whose tool died); only ZmqEndpoint's folders."""
    path = Path(address.removeprefix("ipc://"))
    if address.startswith("ipc://") and path.parent.name.startswith(ENDPOINT_PREFIX):
        shutil.rmtree(path.parent, ignore_errors=True)


# --------------------------------------------------------------------------- the engine's side


class _Stopped(Exception):
    """close() asked the sender thread to stop while it waited on a full socket."""


class ZmqSender:
    """save_output over ZMQ: `send` queues a step on the main thread, a daemon thread PUSHes it.

    Same `send(sampled_token_ids, not_need_stop, preempted_idx)` as the SysV sender: it returns the
    (start, end) ns the host waited on a full queue, or None. `send_end` is the end of the run (it
    waits until everything queued has been sent); `close` (also on exit from `with`) stops the thread.
    `check_alive` (the output reader's) is called every 64 steps and while the host waits. Close it after
    the reader has finished (it exits once it has the end of the run): what the socket still holds is
    dropped then.
    """

    def __init__(
        self,
        address: str,
        check_alive: Callable[[], None] | None = None,
        msg_id: int = 1,
        *,
        max_queued: int = MAX_QUEUED,
        send_timeout_ms: int = SEND_TIMEOUT_MS,
        high_water_mark: int = HIGH_WATER_MARK,
    ) -> None:
        zmq = self._zmq = require_zmq()
        self.address = address
        self.msg_id = check_msg_id(msg_id)
        self.send_timeout_ms = send_timeout_ms
        self._check_alive = check_alive
        self.sent = 0  # steps handed to send()
        self.delivered = 0  # messages the socket took (the end of the run included)
        self.queue_full = 0  # sends that found the queue full (the main thread waited)
        self.socket_full = 0  # messages that found the socket full (the sender thread waited)
        self._socket_waits = array("q")  # (start, end) ns pairs of the sender thread's waits
        self._error: FdoError | None = None
        self._reported = False
        self._stop = threading.Event()
        self._end_sent = threading.Event()
        self._queue: queue.SimpleQueue[StepOutput | None] = queue.SimpleQueue()
        self._max_queued = max_queued
        self._puts = 0  # items the main thread put (written by it alone)
        self._taken = 0  # items the sender thread took (written by it alone)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self._socket.connect(address)
        self._thread = threading.Thread(target=self._run, name="fdoverlap-zmq-sender", daemon=True)
        try:
            with stop_signals.held():  # SIGINT/SIGTERM stay with the main thread, which raises Interrupted
                self._thread.start()  # from here on only the thread touches the socket
        except BaseException:
            self._socket.close(linger=0)
            self._context.term()
            raise

    def __enter__(self) -> ZmqSender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc_type is None and not self._reported:  # an error nobody has seen yet
            self.raise_if_failed()

    @property
    def full_waits(self) -> int:
        """Waits on back-pressure, the queue's and the socket's (the SysV sender's full-queue count)."""
        return self.queue_full + self.socket_full

    def socket_wait_intervals(self) -> np.ndarray:
        """int64[n, 2]: the (start, end) ns of each wait of the sender thread on a full socket."""
        return np.array(self._socket_waits.tolist(), dtype=np.int64).reshape(-1, 2)  # no buffer the thread shares

    def raise_if_failed(self) -> None:
        """Raise the sender thread's error on the caller's thread, if it had one."""
        if self._error is not None:
            self._reported = True
            raise self._error

    def send(self, sampled_token_ids: Any, not_need_stop: Any, preempted_idx: Any) -> tuple[int, int] | None:
        """Queue one step's output; returns the (start, end) ns the host waited on a full queue, if it did."""
        self.raise_if_failed()
        self.sent += 1
        if self._check_alive is not None and self.sent % 64 == 0:
            self._check_alive()
        tokens = _host_array(sampled_token_ids)
        output = step_output(
            tokens, bool(_host_array(not_need_stop).reshape(-1)[0]), _host_array(preempted_idx), self.msg_id
        )
        return self._put(output)

    def _put(self, item: StepOutput | None) -> tuple[int, int] | None:
        waited = None
        if self._puts - self._taken >= self._max_queued:
            start = time.monotonic_ns()
            self.queue_full += 1
            while self._puts - self._taken >= self._max_queued:
                self.raise_if_failed()
                if self._check_alive is not None:
                    self._check_alive()
                time.sleep(FULL_QUEUE_SLEEP_S)
            waited = start, time.monotonic_ns()
        self._queue.put(item)
        self._puts += 1
        return waited

    def send_end(self, timeout_s: float = 10.0) -> None:
        """Send the end-of-run message [0, 0] after every queued step: return once the socket has taken it,
        raise if a step could not be sent. The reader confirms it has everything by finishing."""
        self.raise_if_failed()
        self._put(_end_of_run())
        deadline = time.monotonic() + timeout_s + self.send_timeout_ms / 1000
        while not self._end_sent.wait(_POLL_MS / 1000):
            self.raise_if_failed()
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise FdoError(f"the ZMQ output sender did not send the end of the run within {timeout_s:g} s")

    def close(self) -> None:
        """Stop the thread, close the socket (linger 0: call it once the reader has finished, or the run failed)
        and the context; idempotent."""
        self._stop.set()
        self._queue.put(None)  # wakes a thread waiting for work
        self._thread.join(self.send_timeout_ms / 1000 + 5)
        if self._thread.is_alive():  # not reached: the thread looks at the stop flag every _POLL_MS
            raise FdoError("the ZMQ output sender thread did not stop", exit_code=ExitCode.INTERNAL)
        self._context.term()

    # ------------------------------------------------------------------ the sender thread

    def _run(self) -> None:
        # After the end of the run the thread keeps the socket open (its messages may still be in flight)
        # and waits for close().
        try:
            while True:
                item = self._queue.get()
                self._taken += 1
                if item is None or self._stop.is_set():
                    break
                self._send(pickle.dumps(item))
                self.delivered += 1
                if item.msg_id == END_OF_RUN[0]:
                    self._end_sent.set()
        except _Stopped:
            pass
        except FdoError as e:
            self._error = e
        except Exception as e:  # a pickling or ZMQ error: raised on the main thread, never lost
            self._error = FdoError(
                f"the ZMQ output sender failed: {type(e).__name__}: {e}", exit_code=ExitCode.INTERNAL
            )
        finally:
            self._socket.close(linger=0)

    def _send(self, payload: bytes) -> None:
        """Send one message; wait (counted) while the socket is full, up to the send timeout."""
        zmq = self._zmq
        try:
            self._socket.send(payload, zmq.NOBLOCK, copy=False)
            return
        except zmq.Again:
            pass
        start = time.monotonic_ns()
        self.socket_full += 1
        deadline = start + self.send_timeout_ms * 1_000_000
        try:
            while True:
                if self._stop.is_set():
                    raise _Stopped
                left_ms = (deadline - time.monotonic_ns()) // 1_000_000
                if left_ms <= 0:
                    raise FdoError(
                        f"the output reader took no message for {self.send_timeout_ms} ms (ZMQ send timeout on"
                        f" {self.address}); {self.sent - self.delivered} steps were not delivered"
                    )
                if self._socket.poll(min(left_ms, _POLL_MS), zmq.POLLOUT):
                    try:
                        self._socket.send(payload, zmq.NOBLOCK, copy=False)
                        return
                    except zmq.Again:
                        continue
        finally:
            self._socket_waits.extend((start, time.monotonic_ns()))


# --------------------------------------------------------------------------- the reader's side


class ZmqReceiver:
    """The output reader's PULL, bound at the endpoint's address; closed (linger 0) on exit from `with`."""

    def __init__(self, address: str, high_water_mark: int = HIGH_WATER_MARK) -> None:
        zmq = self._zmq = require_zmq()
        self.address = address
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, high_water_mark)
        self._bound = False
        try:
            self._socket.bind(address)
            self._bound = True
        except zmq.ZMQError as e:
            self.close()
            raise FdoError(f"cannot bind the output socket {address}: {e}") from None

    def __enter__(self) -> ZmqReceiver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def receive(self, timeout_ms: int | None = None) -> StepOutput | None:
        """The next step's output (the end of the run has no slots); None if nothing came within timeout_ms.

        The wait is polls of at most _POLL_MS, so that the interpreter runs a signal's handler within one: a
        signal that lands just before an unbounded poll, or in another thread, only sets the handler's flag,
        and a reader whose tool had died (the death signal) waited for a message that never came."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            left_ms = _POLL_MS if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if self._socket.poll(min(left_ms, _POLL_MS), self._zmq.POLLIN):
                break
            if deadline is not None and time.monotonic() >= deadline:
                return None
        data = self._socket.recv()
        try:
            item = pickle.loads(data)
        except Exception as e:
            raise FdoError(
                f"the output socket {self.address} delivered {len(data)} bytes that do not unpickle: {e}"
            ) from None
        if not isinstance(item, StepOutput):
            raise FdoError(f"the output socket {self.address} delivered a {type(item).__name__}, not a step's output")
        return item

    def messages(self) -> Iterator[list[int]]:
        """Each step's message as the SysV reader loop gets it, [±msg_id, bsz, tokens...], until the end of the run."""
        while True:
            item = self.receive()
            assert item is not None  # no timeout: receive blocks
            message = item.message()
            if tuple(message[:2]) == END_OF_RUN:
                return
            yield message

    def close(self) -> None:
        """Close the socket and the context, and remove the socket file the bind made; idempotent."""
        self._socket.close(linger=0)
        self._context.term()
        if self._bound and self.address.startswith("ipc://"):  # ZMQ leaves the file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.removeprefix("ipc://"))
