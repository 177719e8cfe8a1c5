"""SIGINT, SIGTERM and SIGHUP at seeded random points of real runs on the CPU: `replay`, `compare`, and
`profile` with the stand-in nsys; SIGKILL of the tool while its output reader starts.

After each signal: exit code 130, 143 or 129 (or 0 when the run had already finished); no traceback; the
results measured so far in run.json (valid JSON, "complete": false) once a path has started; and
nothing left behind: no process the run started, no SysV message queue it created, no output-reader
folder, no temporary file beside run.json.

The points are events seen from outside (the process tree, the message queues, the output file) plus a
seeded offset: while the CLI and paddle load, while the output reader starts, once a path sends its
first step (mid-path), in compare's second path, and once run.json is written.

What the run left is found without guessing, so that other runs on the machine (which create queues and
reuse process ids) never count: tests/probe/sitecustomize.py logs every queue the run's processes create
and marks them in their environment, and the run gets a TMPDIR of its own. The check waits for the run's
processes to end (a deadline only guards against a hang), then looks once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fdoverlap_cli.nsys.profile import _alive, _descendants
from tests.conftest import REPO
from tests.test_nsys_profile import FAKE_NSYS

NSYS_EXPORT = Path(__file__).parent / "fixtures" / "nsys" / "paddle-h100-nvtx-dtoh.sqlite"
READER = b"fdoverlap_cli.engine.reader"
PROBE = Path(__file__).parent / "probe"
PROBE_VARIABLE = "FDOVERLAP_TEST_PROBE"


def _queues() -> dict[int, tuple[int, int]]:
    """msqid -> (last sender pid, last receiver pid) of every SysV message queue."""
    rows = {}
    for line in Path("/proc/sysvipc/msg").read_text().splitlines()[1:]:
        f = line.split()
        rows[int(f[1])] = (int(f[5]), int(f[6]))
    return rows


def _marked(marker: bytes) -> list[int]:
    """The live processes whose environment holds `marker` (NAME=value): the run's, and nobody else's."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _catches_sigterm(pid: int) -> bool:
    """True once the process has a SIGTERM handler: the CLI has taken the stop signals over."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


@dataclass
class Watched:
    """A command run in a subprocess, watched from outside until a signal point."""

    args: list[str]
    out: Path
    env: dict[str, str] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)  # processes of the run seen while it ran (for the events)
    readers: list[int] = field(default_factory=list)  # output readers, in start order

    def start(self) -> None:
        work = self.out.parent / "probe"
        work.mkdir()
        self.probe_log = work / "queues.log"
        self.probe_log.touch()
        self.tmpdir = work / "tmp"  # the run's temporary folders land here, and nowhere else
        self.tmpdir.mkdir()
        self.marker = f"{PROBE_VARIABLE}={self.probe_log}".encode()
        python_path = os.pathsep.join(p for p in (str(PROBE), str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {PROBE_VARIABLE: str(self.probe_log), "TMPDIR": str(self.tmpdir), "PYTHONPATH": python_path}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fdoverlap_cli", *self.args],
            cwd=REPO,
            env={**os.environ, **self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pids.add(self.proc.pid)

    def created_queues(self) -> list[int]:
        """Every queue the run's processes created, in order (from the probe's log)."""
        return [int(line.split()[1]) for line in self.probe_log.read_text().splitlines() if line.startswith("queue ")]

    def sending(self) -> list[int]:
        """The run's queues some process has sent on (a path is replaying)."""
        queues = _queues()
        return [q for q in self.created_queues() if queues.get(q, (0, 0))[0] != 0]

    def _look(self) -> None:
        for pid in _descendants(self.proc.pid):
            self.pids.add(pid)
            # Asked again at every look: between fork and exec a reader still has the tool's command line, and
            # a reader's own child (ctypes.util.find_library runs ldconfig) has the reader's: that is no reader.
            is_reader = pid not in self.readers and READER in _cmdline(pid)
            if is_reader and not any(pid in _descendants(r) for r in self.readers):
                self.readers.append(pid)

    def wait_for(self, event: str, offset: float, timeout: float = 180.0) -> bool:
        """Watch until `event`, then `offset` seconds more; False if the process ended first."""
        deadline = time.monotonic() + timeout
        reached = {
            "start": lambda: _catches_sigterm(self.proc.pid),
            "reader": lambda: len(self.readers) >= 1,
            "second reader": lambda: len(self.readers) >= 2,
            "sending": lambda: len(self.sending()) >= 1,
            "second sending": lambda: len(self.sending()) >= 2,
            "results": lambda: self.out.exists(),
            "socket": lambda: any(self.tmpdir.glob("fdoverlap-zmq-*/output")),  # the ZMQ reader has bound
        }[event]
        while not reached():
            if self.proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"never reached '{event}'"
            self._look()
            time.sleep(0.005)
        until = time.monotonic() + offset
        while time.monotonic() < until and self.proc.poll() is None:
            self._look()
            time.sleep(0.005)
        return self.proc.poll() is None

    def interrupt(self, signum: int) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        _, stderr = self.proc.communicate(timeout=180)
        return self.proc.returncode, stderr

    def debris(self, deadline_s: float = 120.0) -> list[str]:
        """What the run left behind, once every process of it has ended (or the deadline passed: a hang)."""
        deadline = time.monotonic() + deadline_s
        while (alive := _marked(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [f"process {p}: {b' '.join(_cmdline(p))[:120]!r}" for p in alive]
        existing = _queues()
        left += [f"message queue {q}" for q in self.created_queues() if q in existing]
        left += [f"temporary {p}" for p in sorted(self.tmpdir.iterdir())]
        left += [f"temporary file {p}" for p in self.out.parent.glob(f".{self.out.name}.*")]
        return left


def _check(run: Watched, signum: int, code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    doc = None
    if run.out.exists():
        doc = json.loads(run.out.read_text())  # whole, never half written
        assert doc["format"] == "fdoverlap-run"
    finished = doc is not None and doc["complete"] is True
    if finished:  # the signal came after the work: a clean exit, or stopped while exiting
        assert code in (0, 128 + signum, -signum), stderr
    else:
        assert code == 128 + signum, stderr
        assert stderr.strip().splitlines()[-1] == f"fdoverlap: interrupted by signal {int(signum)}"
    if run.readers:  # a path had started: what it measured is saved
        assert doc is not None, f"no {run.out.name} although a path had started"
        assert doc["paths"], doc
        assert finished or any(p["complete"] is False for p in doc["paths"].values())
    assert run.debris() == []


def _points(seed: int, events: list[str], n: int) -> list[tuple[str, float, signal.Signals]]:
    """n seeded (event, offset, signal) points."""
    rng = random.Random(seed)
    offsets = {
        "start": (0.0, 2.5),
        "reader": (0.0, 1.5),
        "second reader": (0.0, 1.0),
        "sending": (0.0, 0.25),
        "second sending": (0.0, 0.25),
        "results": (0.0, 0.05),
        "socket": (0.0, 0.3),
    }
    return [
        (event, rng.uniform(*offsets[event]), rng.choice([signal.SIGINT, signal.SIGTERM]))
        for event in (events[i % len(events)] for i in range(n))
    ]


def _ids(points: list[tuple[str, float, signal.Signals]]) -> list[str]:
    return [f"{event}+{offset:.2f}s-{sig.name}" for event, offset, sig in points]


REPLAY_POINTS = _points(11, ["start", "reader", "sending", "sending", "results"], 5)
COMPARE_POINTS = _points(23, ["start", "reader", "sending", "second reader", "second sending", "results"], 6)
PROFILE_POINTS = _points(37, ["start", "reader", "sending"], 3)


def _interrupt(out: Path, args: list[str], event: str, offset: float, signum: int, env: dict | None = None) -> int:
    """Run `fdoverlap ARGS`, signal it at the point, check what it left; returns its exit code."""
    run = Watched(args, out, env or {})
    run.start()
    run.wait_for(event, offset)
    code, stderr = run.interrupt(signum)
    _check(run, signum, code, stderr)
    return code


@pytest.mark.parametrize(("event", "offset", "signum"), REPLAY_POINTS, ids=_ids(REPLAY_POINTS))
def test_replay_interrupted(tmp_path, ops, event, offset, signum):
    out = tmp_path / "run.json"
    _interrupt(out, ["replay", "--device", "cpu", "--path", "overlap", "-o", str(out)], event, offset, signum)


@pytest.mark.slow
@pytest.mark.parametrize(("event", "offset", "signum"), COMPARE_POINTS, ids=_ids(COMPARE_POINTS))
def test_compare_interrupted(tmp_path, ops, event, offset, signum):
    out = tmp_path / "run.json"
    args = ["compare", "--device", "cpu", "--window", "100:140", "-o", str(out)]
    if _interrupt(out, args, event, offset, signum) != 0 and event.startswith("second"):
        doc = json.loads(out.read_text())
        assert doc["paths"]["sync"]["complete"] is True and doc["paths"]["overlap"]["complete"] is False


ZMQ_POINTS = _points(53, ["socket", "socket", "reader"], 3)


@pytest.mark.parametrize(("event", "offset", "signum"), ZMQ_POINTS, ids=_ids(ZMQ_POINTS))
def test_zmq_replay_interrupted(tmp_path, ops, event, offset, signum):
    """The ZMQ output path: no socket file or endpoint folder (they live in the run's TMPDIR), no reader."""
    out = tmp_path / "run.json"
    args = ["replay", "--device", "cpu", "--path", "overlap", "--output-ipc", "zmq", "-o", str(out)]
    _interrupt(out, args, event, offset, signum)


def test_a_killed_zmq_tool_leaves_nothing_behind(tmp_path, ops):
    """SIGKILL of the tool once its ZMQ reader has bound: the reader removes the endpoint and its folder."""
    out = tmp_path / "run.json"
    run = Watched(["replay", "--device", "cpu", "--path", "overlap", "--output-ipc", "zmq", "-o", str(out)], out)
    run.start()
    assert run.wait_for("socket", 0.05)
    code, _ = run.interrupt(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert run.debris() == []


def _nsys_that_waits(tmp_path: Path) -> Path:
    """The stand-in nsys, outliving a SIGINT as real nsys does: it waits for the command it profiles
    (the stand-in alone would die of KeyboardInterrupt and kill the command mid-cleanup)."""
    nsys = tmp_path / "bin" / "nsys"
    nsys.parent.mkdir(exist_ok=True)
    code = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, lambda *_: None); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    nsys.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{code}" {FAKE_NSYS} "$@"\n')
    nsys.chmod(0o755)
    return nsys


@pytest.mark.slow
@pytest.mark.parametrize(("event", "offset", "signum"), PROFILE_POINTS, ids=_ids(PROFILE_POINTS))
def test_profile_interrupted(tmp_path, ops, event, offset, signum):
    """profile passes the signal on to nsys's process group and every descendant, and waits for them."""
    out = tmp_path / "run.json"
    env = {"FAKE_NSYS_LOG": str(tmp_path / "nsys.log"), "FAKE_NSYS_EXPORT": str(NSYS_EXPORT)}
    nsys = str(_nsys_that_waits(tmp_path))
    args = ["profile", "--nsys", nsys, "-o", str(tmp_path / "prof"), "--", "replay", "--device", "cpu", "-o", str(out)]
    _interrupt(out, args, event, offset, signum, env)


NSYS_POINTS = _points(41, ["start", "reader", "sending", "sending"], 4)


@pytest.mark.gpu
@pytest.mark.parametrize(("event", "offset", "signum"), NSYS_POINTS, ids=_ids(NSYS_POINTS))
def test_profile_interrupted_under_real_nsys(tmp_path, ops, event, offset, signum):
    """The same checks as with the stand-in, under Nsight Systems itself (which handles signals its own way)."""
    from fdoverlap_cli.errors import FdoError
    from fdoverlap_cli.nsys.profile import find_nsys

    try:
        nsys = find_nsys()
    except FdoError:
        pytest.skip("nsys is not installed")
    out = tmp_path / "run.json"
    replay = ["replay", "--device", "gpu", "--preset", "8b", "--layers", "2", "-o", str(out)]
    _interrupt(
        out,
        ["profile", "--nsys", nsys, "--capture", "all", "-o", str(tmp_path / "prof"), "--", *replay],
        event,
        offset,
        signum,
    )


# A child started by a pytest that runs as a shell's background job inherits SIGINT ignored (and under nohup,
# SIGHUP): the scripts below start as from a terminal, with the stop signals at their defaults.
_DEFAULT_STOP_SIGNALS = (
    "import signal\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_exiting_is_one_line(signum):
    """A signal that lands in an atexit callback, after the command is done: the exit code says so, one
    line, no traceback (SystemExit raised there would print one and be lost)."""
    script = (
        "import atexit, os, sys, time\n"
        f"{_DEFAULT_STOP_SIGNALS}"
        "from fdoverlap_cli import cli\n"
        f"atexit.register(lambda: os.kill(os.getpid(), {int(signum)}) or time.sleep(5))\n"
        "sys.argv = ['fdoverlap', '--version']\n"
        "cli.entry_point()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("fdoverlap "), done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [f"fdoverlap: interrupted by signal {int(signum)}"]
    assert done.returncode == 128 + signum


HANGUP_POINTS = [("reader", 0.5), ("sending", 0.1)]


@pytest.mark.parametrize(("event", "offset"), HANGUP_POINTS, ids=[f"{e}+{o:.2f}s" for e, o in HANGUP_POINTS])
def test_replay_hung_up(tmp_path, ops, event, offset):
    """SIGHUP (the terminal or the ssh session closed) stops a run as SIGTERM does: 129, one line, and
    what was measured saved."""
    out = tmp_path / "run.json"
    args = ["replay", "--device", "cpu", "--path", "overlap", "-o", str(out)]
    assert _interrupt(out, args, event, offset, signal.SIGHUP) in (0, 128 + signal.SIGHUP)


@pytest.mark.parametrize("offset", [0.0, 0.1, 0.3])
def test_a_killed_tool_leaves_nothing_behind(tmp_path, ops, offset):
    """SIGKILL of the tool as its output reader starts: the reader, told by the kernel (PR_SET_PDEATHSIG)
    or finding its parent gone before it could ask, removes the queue and its folder, and exits."""
    out = tmp_path / "run.json"
    run = Watched(["replay", "--device", "cpu", "--path", "overlap", "-o", str(out)], out)
    run.start()
    assert run.wait_for("reader", offset)
    code, _ = run.interrupt(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert run.created_queues(), "the run had created its queue"
    assert run.debris() == []


TEARDOWN_CASES = [
    ((signal.SIGINT,), False),
    ((signal.SIGTERM,), False),
    ((signal.SIGHUP,), False),
    ((signal.SIGINT, signal.SIGTERM), True),
    ((signal.SIGINT, signal.SIGHUP), True),
]


@pytest.mark.parametrize(
    ("sent", "sigint_ignored"),
    TEARDOWN_CASES,
    ids=[f"{'+'.join(s.name for s in sent)}{'-sigint-ignored' if ign else ''}" for sent, ign in TEARDOWN_CASES],
)
def test_a_signal_during_the_interpreters_teardown_changes_nothing(sent, sigint_ignored):
    """After the last exit callback the interpreter puts the default actions back while it tears modules
    down; a signal then must not end the process silently with -N: it is held, and the command's code
    stands (everything was written already). A shell's background job starts with SIGINT ignored: it stays
    ignored, and SIGTERM or SIGHUP is still held (the tool once handled the three only when all were at their
    defaults, and the process ended with -15 / -1)."""
    script = (
        "import os, sys, time\n"
        f"{_DEFAULT_STOP_SIGNALS}"
        + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if sigint_ignored else "")
        + "from fdoverlap_cli import cli\n"
        "class Late:\n"  # its __del__ runs as the interpreter clears modules, after every exit callback
        "    def __del__(self, kill=os.kill, pid=os.getpid(), sleep=time.sleep):\n"
        + "".join(f"        kill(pid, {int(signum)})\n" for signum in sent)
        + "        sleep(0.5)\n"
        "late = Late()\n"
        "sys.argv = ['fdoverlap', '--version']\n"
        "cli.entry_point()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("fdoverlap "), done.stdout
    assert (done.returncode, done.stderr) == (0, "")


def test_a_signal_while_the_reader_folder_is_removed_does_not_leave_it(monkeypatch):
    """A signal landing in the removal of the reader's folder (result.json and all) used to cut it short;
    it now waits for the removal, then stops the run."""
    import tempfile

    from fdoverlap_cli.engine.reader import OutputReader
    from fdoverlap_cli.errors import Interrupted
    from fdoverlap_cli.trace.format import trace_from_dict
    from tests.test_trace_validate import BASE

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    reader = OutputReader(trace_from_dict(BASE), msqid=0)
    folder = Path(reader._dir.name)
    (folder / "result.json").write_text("{}")
    real_rmtree = tempfile._shutil.rmtree

    def rmtree_hit_by_a_signal(path: str, *args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # lands here, mid-removal
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(tempfile._shutil, "rmtree", rmtree_hit_by_a_signal)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Interrupted):
            reader.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not folder.exists()
