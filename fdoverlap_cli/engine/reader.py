"""The output reader: the engine's side of FastDeploy's output queue, in a separate process.

The runner's save_model_output sends one message per executed step,
`[±msg_id, bsz, token_0 … token_bsz-1]` (−1: the slot produced nothing, −9: the slot's request was
preempted at this step). The reader receives every message and rebuilds each request's token stream
the way FastDeploy's engine does: a token in slot s belongs to the request occupying s. It knows the
order of occupants of each slot from the trace; an occupant leaves when it has all its tokens or at
its preemption marker.

Run as `python -m fdoverlap_cli.engine.reader --msqid N --plan plan.json --out result.json` (the SysV queue;
it loads paddle and the ops for get_output), or with `--zmq ipc://...` instead of `--msqid` (the ZMQ path: it
binds the PULL there and needs neither).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdoverlap_cli.engine import parent_death
from fdoverlap_cli.engine.msg_queue import END_OF_RUN, FULL_QUEUE_SLEEP_S, remove_queue
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.fileio import atomic_open, write_json
from fdoverlap_cli.trace import Trace

PREEMPTED = -9
READY = "READY"
_MAX_ANOMALIES = 20


def reader_plan(trace: Trace) -> dict[str, Any]:
    """What the reader needs from the trace: each slot's occupants in order, and each request's length."""
    index = trace.request_index
    occupants: list[list[int]] = [[] for _ in range(trace.config.max_num_seqs)]
    for step in trace.steps:
        for ins in step.insert:
            if ins.start == 0:
                occupants[ins.slot].append(index[ins.request])
    return {
        "bsz": trace.config.max_num_seqs,
        "ids": [r.id for r in trace.requests],
        "output_len": [r.output_len for r in trace.requests],
        "occupants": occupants,
    }


@dataclass
class ReaderResult:
    """What the reader rebuilt from the messages."""

    tokens: dict[str, list[int]]
    messages: int
    stop_messages: int  # messages whose msg_id was negative (not_need_stop false)
    markers: list[tuple[int, int, str]]  # (message index, slot, request) of each preemption marker
    anomalies: list[str] = field(default_factory=list)
    anomaly_count: int = 0

    @classmethod
    def load(cls, summary_path: Path) -> ReaderResult:
        """Read what the reader process wrote: its summary and, beside it, the token streams."""
        d = json.loads(summary_path.read_text())
        flat = array("i", _tokens_path(summary_path).read_bytes())
        tokens, at = {}, 0
        for rid, count in zip(d["ids"], d["counts"], strict=True):
            tokens[rid] = flat[at : at + count].tolist()
            at += count
        return cls(
            tokens=tokens,
            messages=d["messages"],
            stop_messages=d["stop_messages"],
            markers=[tuple(m) for m in d["markers"]],
            anomalies=d["anomalies"],
            anomaly_count=d["anomaly_count"],
        )


def _tokens_path(summary_path: Path) -> Path:
    return summary_path.with_suffix(".tokens")


class TokenStreams:
    """Rebuilds per-request token streams from messages, one slot pointer per slot."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.ids = plan["ids"]
        self.output_len = plan["output_len"]
        self.occupants = plan["occupants"]
        self.position = [0] * plan["bsz"]  # index of the current occupant of each slot
        self.tokens = [array("i") for _ in self.ids]  # 4 bytes a token, as in the message: a long run stays small
        self.messages = 0
        self.stop_messages = 0
        self.markers: list[tuple[int, int, str]] = []
        self.anomalies: list[str] = []
        self.anomaly_count = 0

    def _anomaly(self, text: str) -> None:
        self.anomaly_count += 1
        if len(self.anomalies) < _MAX_ANOMALIES:
            self.anomalies.append(text)

    def _occupant(self, slot: int) -> int | None:
        queue = self.occupants[slot]
        pos = self.position[slot]
        return queue[pos] if pos < len(queue) else None

    def add(self, message: list[int]) -> None:
        msg_id, bsz = message[0], message[1]
        n = self.messages
        self.messages += 1
        self.stop_messages += msg_id < 0
        if len(message) != bsz + 2 or bsz > len(self.position):
            self._anomaly(f"message {n}: bsz {bsz} with {len(message) - 2} tokens")
            return
        for slot, token in enumerate(message[2:]):
            if token == -1:
                continue
            r = self._occupant(slot)
            if r is None:
                self._anomaly(f"message {n}: token {token} in slot {slot}, which has no more occupants")
                continue
            if token == PREEMPTED:
                self.markers.append((n, slot, self.ids[r]))
                self.position[slot] += 1
                continue
            if token < 0:
                self._anomaly(f"message {n}: unexpected token {token} in slot {slot}")
                continue
            self.tokens[r].append(token)
            if len(self.tokens[r]) >= self.output_len[r]:
                self.position[slot] += 1

    def write(self, summary_path: Path) -> None:
        """Write the token streams as one flat int32 file (no Python int per token), then the summary."""
        with atomic_open(_tokens_path(summary_path), "wb") as f:
            for toks in self.tokens:
                toks.tofile(f)
        write_json(summary_path, self._summary())

    def _summary(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "counts": [len(toks) for toks in self.tokens],
            "messages": self.messages,
            "stop_messages": self.stop_messages,
            "markers": self.markers,
            "anomalies": self.anomalies,
            "anomaly_count": self.anomaly_count,
        }


# --------------------------------------------------------------------------- the engine's side (parent)


class OutputReader:
    """Starts, watches and stops the reader process of one replay."""

    def __init__(self, trace: Trace, msqid: int | None = None, zmq_address: str | None = None) -> None:
        """Read the SysV queue `msqid`, or (`zmq_address`) bind a PULL at the ZMQ endpoint's address."""
        if (msqid is None) == (zmq_address is None):
            raise ValueError("the output reader reads one transport: give msqid or zmq_address")
        self.msqid = msqid
        self.zmq_address = zmq_address
        self._dir = tempfile.TemporaryDirectory(prefix="fdoverlap-reader-")
        work = Path(self._dir.name)
        self._plan_path = work / "plan.json"
        self._out_path = work / "result.json"
        self._err_path = work / "stderr.txt"
        write_json(self._plan_path, reader_plan(trace))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._err_path, "wb") as err:
            source = ["--zmq", self.zmq_address] if self.zmq_address else ["--msqid", str(self.msqid)]
            args = [*source, "--plan", str(self._plan_path), "--out", str(self._out_path)]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fdoverlap_cli.engine.reader", *args, "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # one line, READY, once it can receive
                stderr=err,
                start_new_session=True,  # a Ctrl-C reaches the tool, which then stops the reader
            )

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until the reader receives (it imports paddle and loads the ops first: seconds).

        Until then the queue would fill after a few dozen steps and back-pressure would stall the replay.
        """
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline().decode(errors="replace").strip()
                if line == READY:
                    return
                self.check_alive()
        raise FdoError(f"the output reader was not ready within {timeout:.0f} s{self._why()}")

    def _why(self) -> str:
        """': <the reader's last line on stderr>', or nothing."""
        try:
            lines = self._err_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1]}" if lines else ""

    def check_alive(self) -> None:
        """Raise if the reader has exited before the end of the run."""
        if self.proc is None:
            raise FdoError("the output reader was not started")
        code = self.proc.poll()
        if code is not None:
            raise FdoError(f"the output reader exited with code {code} before the end of the run{self._why()}")

    def finish(self, send_end: Any, timeout: float = 120.0) -> ReaderResult:
        """Send the end-of-run message, wait for the reader and return what it rebuilt."""
        self.check_alive()
        send_end()
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise FdoError(f"the output reader did not finish within {timeout:.0f} s of the end of the run") from None
        if code != 0:
            raise FdoError(f"the output reader failed with code {code}{self._why()}")
        return ReaderResult.load(self._out_path)

    def stop(self) -> None:
        """Terminate the reader if it still runs (idempotent), and remove its working files."""
        from fdoverlap_cli import stop_signals

        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            with stop_signals.held():  # a signal now must not cut the removal short (result.json left behind)
                self._dir.cleanup()


class OutputSender:
    """save_output with back-pressure: a full queue is retried (never a lost message) while the reader lives."""

    def __init__(self, ops: Any, msqid: int, reader: OutputReader, msg_id: int = 1) -> None:
        self.ops = ops
        self.msqid = msqid
        self.reader = reader
        self.msg_id = msg_id
        self.full_waits = 0
        self.sent = 0

    def send(self, sampled_token_ids: Any, not_need_stop: Any, preempted_idx: Any) -> tuple[int, int] | None:
        """Send one step's message; returns the (start, end) ns the host was blocked on a full queue, if it was."""
        args = (sampled_token_ids, not_need_stop, preempted_idx, self.msqid, self.msg_id)
        self.sent += 1
        if self.sent % 64 == 0:  # a dead reader is noticed within a few steps, not at the end of the run
            self.reader.check_alive()
        blocked_since = None
        while True:
            status = int(self.ops.save_output(*args).numpy()[0])
            if status == 0:
                return None if blocked_since is None else (blocked_since, time.monotonic_ns())
            if status != 1:
                raise FdoError(f"save_output: msgsnd failed: {os.strerror(-status)}")
            blocked_since = blocked_since or time.monotonic_ns()
            self.full_waits += 1
            self.reader.check_alive()
            time.sleep(FULL_QUEUE_SLEEP_S)


# --------------------------------------------------------------------------- the reader process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fdoverlap-reader")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--msqid", type=int)
    source.add_argument("--zmq", metavar="ADDRESS")
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, parent_death.PARENT_DEATH_SIGNAL):
        signal.signal(signum, parent_death.terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        parent_death.die_with_parent(args.parent)  # in the try: a tool that died before this must still be cleaned up
        return _read(args)
    except BaseException:  # SystemExit from terminate or die_with_parent, or what paddle's import makes of it
        # The death signal comes again at each reparenting while the tool's threads exit.
        signal.signal(parent_death.PARENT_DEATH_SIGNAL, signal.SIG_IGN)
        # Stopped by the tool (SIGTERM), the tool cleans up; any other way out may be the tool dying, which can
        # take a moment to show. If it died, nobody else will remove the queue and the folder.
        stopped = signal.SIGTERM in parent_death.signalled or signal.SIGHUP in parent_death.signalled
        if parent_death.parent_gone(args.parent, 0.0 if stopped else parent_death.PARENT_EXIT_GRACE_S):
            from fdoverlap_cli import stop_signals

            # Held: a stop signal now (after another way out, a broken pipe to the dead tool) must not cut
            # the removal short.
            with stop_signals.held():
                if args.zmq:
                    from fdoverlap_cli.engine.zmq_output import remove_endpoint

                    remove_endpoint(args.zmq)
                else:
                    remove_queue(args.msqid)
                shutil.rmtree(args.plan.parent, ignore_errors=True)
        raise


def _read(args: argparse.Namespace) -> int:
    """Load paddle and the ops, then receive until the end-of-run message and write the result."""
    from fdoverlap_cli import stop_signals

    if args.zmq:
        return _read_zmq(args)

    # paddle's SIGTERM handler must not replace terminate; the tool's death, too, waits for the import's end.
    with stop_signals.held((*stop_signals.STOP_SIGNALS, parent_death.PARENT_DEATH_SIGNAL)):
        import numpy as np

        from fdoverlap_cli.platform import require_paddle

        paddle = require_paddle()
    from fdoverlap_cli import ops as op_library

    paddle.set_device("cpu")  # the reader only reads the queue: no GPU context, no GPU kernels
    plan = json.loads(args.plan.read_text())
    ops = op_library.load()
    buf = paddle.to_tensor(np.zeros(plan["bsz"] + 2, dtype=np.int32), place=paddle.CPUPlace())
    streams = TokenStreams(plan)
    print(READY, flush=True)
    while True:
        n = int(ops.get_output(buf, args.msqid, True).numpy()[0])
        if n == -errno.EINTR:  # a signal arrived; its handler has run
            continue
        if n < 0:
            print(f"fdoverlap-reader: msgrcv failed: {os.strerror(-n)}", file=sys.stderr)
            return 3
        message = buf.numpy()[:n].tolist()
        if tuple(message[:2]) == END_OF_RUN:
            break
        streams.add(message)
    streams.write(args.out)
    return 0


def _read_zmq(args: argparse.Namespace) -> int:
    """Bind the PULL, then receive until the end-of-run message and write the result (no paddle needed)."""
    from fdoverlap_cli.engine.zmq_output import ZmqReceiver

    streams = TokenStreams(json.loads(args.plan.read_text()))
    with ZmqReceiver(args.zmq) as receiver:  # closed, its socket file removed, on every exit
        print(READY, flush=True)
        for message in receiver.messages():
            streams.add(message)
    streams.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
