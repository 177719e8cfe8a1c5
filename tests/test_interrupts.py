"""SIGINT and SIGTERM at seeded random points of real runs on the CPU: `replay`, `compare`, and `profile`
with the stand-in nsys.

After each signal: exit code 130 or 143 (or 0 when the run had already finished); no traceback; the
results measured so far in run.json (valid JSON, "complete": false) once a path has started; and
nothing left behind: no process the run started, no SysV message queue it created, no output-reader
folder, no temporary file beside run.json.

The points are events seen from outside (the process tree, the message queues, the output file) plus a
seeded offset: while the CLI and paddle load, while the output reader starts, once a path sends its
first step (mid-path), in compare's second path, and once run.json is written.
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


def _queues() -> dict[int, tuple[int, int, int]]:
    """msqid -> (last sender pid, last receiver pid, change time) of every SysV message queue."""
    rows = {}
    for line in Path("/proc/sysvipc/msg").read_text().splitlines()[1:]:
        f = line.split()
        rows[int(f[1])] = (int(f[5]), int(f[6]), int(f[13]))
    return rows


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
    started: float = 0.0
    pids: set[int] = field(default_factory=set)  # every process of the run seen
    readers: list[int] = field(default_factory=list)  # output readers, in start order
    sending: list[int] = field(default_factory=list)  # queues the run has sent on (a path is replaying)
    reader_dirs: set[Path] = field(default_factory=set)
    queues_before: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def start(self) -> None:
        self.queues_before = _queues()
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fdoverlap_cli", *self.args],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pids.add(self.proc.pid)

    def _look(self) -> None:
        for pid in _descendants(self.proc.pid):
            if pid in self.pids:
                continue
            self.pids.add(pid)
            cmd = _cmdline(pid)
            if READER in cmd:
                self.readers.append(pid)
                self.reader_dirs.add(Path(cmd[cmd.index(b"--plan") + 1].decode()).parent)
        for msqid, (sender, _, _) in _queues().items():
            if sender in self.pids and msqid not in self.sending and msqid not in self.queues_before:
                self.sending.append(msqid)

    def wait_for(self, event: str, offset: float, timeout: float = 180.0) -> bool:
        """Watch until `event`, then `offset` seconds more; False if the process ended first."""
        deadline = time.monotonic() + timeout
        reached = {
            "start": lambda: _catches_sigterm(self.proc.pid),
            "reader": lambda: len(self.readers) >= 1,
            "second reader": lambda: len(self.readers) >= 2,
            "sending": lambda: len(self.sending) >= 1,
            "second sending": lambda: len(self.sending) >= 2,
            "results": lambda: self.out.exists(),
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

    def ours(self, msqid: int, record: tuple[int, int, int]) -> bool:
        """A queue this run created: new since the start, and used by its processes or not used at all."""
        sender, receiver, changed = record
        used_by_us = sender in self.pids or receiver in self.pids
        unused = sender == 0 and receiver == 0 and changed >= int(self.started) - 1
        return msqid not in self.queues_before and (used_by_us or unused)

    def debris(self, grace: float) -> list[str]:
        """What the run left behind, waiting up to `grace` seconds for processes that are dying."""
        deadline = time.monotonic() + grace
        while True:
            left = [f"process {p}: {b' '.join(_cmdline(p))[:120]!r}" for p in sorted(self.pids) if _alive(p)]
            left += [f"message queue {q}" for q, record in _queues().items() if self.ours(q, record)]
            left += [f"reader folder {d}" for d in sorted(self.reader_dirs) if d.exists()]
            left += [f"temporary file {p}" for p in self.out.parent.glob(f".{self.out.name}.*")]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)


def _check(run: Watched, signum: int, code: int, stderr: str, grace: float) -> None:
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
    assert run.debris(grace) == []


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
    _check(run, signum, code, stderr, grace=0.5)
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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_exiting_is_one_line(signum):
    """A signal that lands in an atexit callback, after the command is done: the exit code says so, one
    line, no traceback (SystemExit raised there would print one and be lost)."""
    script = (
        "import atexit, os, sys, time\n"
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
