"""Running an fdoverlap command under Nsight Systems and exporting the report to SQLite.

    nsys profile -t cuda,nvtx -s none --cpuctxsw=none --force-overwrite=true --cuda-graph-trace=GRAPHS \\
        -o NAME CAPTURE python -m fdoverlap_cli COMMAND ...
    nsys export --type sqlite --force-overwrite=true -o NAME.sqlite NAME.nsys-rep

CAPTURE is one of (see docs/nsys.md):
  measure        -c nvtx -p measure@fdoverlap --capture-range-end=stop, with
                 NSYS_NVTX_PROFILER_REGISTER_ONLY=0 so the range name matches as a plain string too:
                 only the measured paths, not the build and warm-up.
  cuda-profiler  -c cudaProfilerApi --capture-range-end=stop, and the command gets --cuda-profiler-range.
  all            no capture range: the whole process.
`--capture-range-end=stop` lets the command finish (and write its run.json) after the range ends.
GRAPHS is how CUDA graph replays are traced: graph (nsys's default: one record per launch) or node (each
kernel of the graph, at a little more tracing cost per replay).

nsys and the command run in their own process group; SIGINT/SIGTERM are passed on to it and to every
descendant, and whatever has not stopped after a grace period is killed, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fdoverlap_cli.errors import ExitCode, FdoError, InputError, Interrupted

CAPTURES = ("measure", "all", "cuda-profiler")
TRACE_OPTIONS = ("-t", "cuda,nvtx", "-s", "none", "--cpuctxsw=none", "--force-overwrite=true")
_CAPTURE_OPTIONS = {
    "measure": ("-c", "nvtx", "-p", "measure@fdoverlap", "--capture-range-end=stop"),
    "all": (),
    "cuda-profiler": ("-c", "cudaProfilerApi", "--capture-range-end=stop"),
}
_CAPTURE_ENV = {"measure": {"NSYS_NVTX_PROFILER_REGISTER_ONLY": "0"}}
_COMMAND_OPTIONS = {"cuda-profiler": ("--cuda-profiler-range",)}
GRAPH_TRACES = ("graph", "node")  # nsys --cuda-graph-trace
STOP_GRACE_S = 10.0  # how long nsys gets to stop after the signal before it is killed
NSYS_HINT = "install Nsight Systems, or point at nsys with --nsys PATH or $NSYS"


def _stderr_fd() -> int:
    """Where a child's stdout goes when ours must hold only our JSON: our stderr (fd 2 if it has no fd)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2


def find_nsys(explicit: str | os.PathLike[str] | None = None) -> str:
    """The nsys executable: `explicit`, else $NSYS, else nsys on PATH; FdoError (exit 2) when there is none."""
    for where, candidate in (("--nsys", explicit), ("$NSYS", os.environ.get("NSYS"))):
        if candidate:
            found = shutil.which(str(candidate))
            if found is None:
                raise FdoError(f"{where} {candidate}: not an executable file ({NSYS_HINT})")
            return found
    found = shutil.which("nsys")
    if found is None:
        raise FdoError(f"nsys not found on PATH: {NSYS_HINT}")
    return found


def report_name(out: str | os.PathLike[str]) -> Path:
    """NAME as nsys's -o wants it (nsys adds .nsys-rep)."""
    p = Path(out)
    return p.with_suffix("") if p.suffix in (".nsys-rep", ".sqlite") else p


def output_files(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The files `profile -o NAME` writes: NAME.nsys-rep and NAME.sqlite."""
    base = report_name(out)
    return base.parent / f"{base.name}.nsys-rep", base.parent / f"{base.name}.sqlite"


def fdoverlap_command(command: Sequence[str], capture: str) -> list[str]:
    """The command line nsys runs: `python -m fdoverlap_cli COMMAND...` (a leading 'fdoverlap' is dropped)."""
    args = list(command)
    if args and Path(args[0]).name == "fdoverlap":
        args = args[1:]
    if not args:
        raise FdoError("give the fdoverlap command to profile after --, e.g. fdoverlap profile -- compare -o run.json")
    return [sys.executable, "-m", "fdoverlap_cli", *args, *_COMMAND_OPTIONS.get(capture, ())]


def profile_argv(
    nsys: str, name: Path, capture: str, command: Sequence[str], cuda_graph_trace: str = "graph"
) -> tuple[list[str], dict[str, str]]:
    """The `nsys profile` command line, and the environment it needs on top of ours."""
    if capture not in CAPTURES:
        raise FdoError(f"--capture: expected one of {', '.join(CAPTURES)}, got '{capture}'")
    if cuda_graph_trace not in GRAPH_TRACES:
        raise FdoError(f"--cuda-graph-trace: expected graph or node, got '{cuda_graph_trace}'")
    argv = [nsys, "profile", *TRACE_OPTIONS, f"--cuda-graph-trace={cuda_graph_trace}", "-o", str(name)]
    argv += _CAPTURE_OPTIONS[capture]
    return argv + fdoverlap_command(command, capture), dict(_CAPTURE_ENV.get(capture, {}))


def export_argv(nsys: str, report: Path, out: Path) -> list[str]:
    return [nsys, "export", "--type", "sqlite", "--force-overwrite=true", "-o", str(out), str(report)]


def results_file(command: Sequence[str]) -> Path | None:
    """The run.json the fdoverlap command writes (its -o/--out), if it writes one."""
    args = list(command)
    for i, arg in enumerate(args):
        if arg in ("-o", "--out") and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
        if arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            return Path(arg[2:])
    return None


# --------------------------------------------------------------------------- running, stoppably


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: Sequence[int], group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _stop(proc: subprocess.Popen, signum: int) -> None:
    """Pass `signum` on to the child's group and descendants; kill what is left after STOP_GRACE_S.

    The grace period waits for the whole family: the profiled command may still be saving its
    results after nsys itself has gone."""
    family = _descendants(proc.pid)
    _signal(family, proc.pid, signum)
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        while (proc.poll() is None or any(map(_alive, family))) and time.monotonic() < deadline:
            time.sleep(0.05)
    except Interrupted:  # a second signal: stop waiting
        pass
    family = [pid for pid in {*family, *_descendants(proc.pid)} if _alive(pid)]
    _signal(family, proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in family:  # reap what was ours; the rest is gone with SIGKILL
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has finished: only its parent's wait is missing)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # gone since kill(0)
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def run_stoppable(argv: Sequence[str], *, env: dict[str, str] | None = None, stdout: int | None = None) -> int:
    """Run `argv` in its own process group and return its exit status; on SIGINT/SIGTERM (Interrupted)
    stop it and its descendants, then re-raise. It gets a private TMPDIR, removed afterwards: nsys keeps
    its own files (TMPDIR/nvidia) there, which would otherwise stay behind."""
    with tempfile.TemporaryDirectory(prefix="fdoverlap-nsys-", ignore_cleanup_errors=True) as tmp:
        try:
            proc = subprocess.Popen(
                list(argv), env={**os.environ, **(env or {}), "TMPDIR": tmp}, stdout=stdout, start_new_session=True
            )
        except OSError as e:
            raise FdoError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            return proc.wait()
        except Interrupted as e:
            _stop(proc, e.signum)
            raise


# --------------------------------------------------------------------------- profile and export


@dataclass(frozen=True)
class ProfileRun:
    report: Path  # NAME.nsys-rep
    sqlite: Path  # NAME.sqlite
    results: Path | None  # the command's run.json, when it wrote one
    exit_code: int  # the profiled command's (as nsys returns it)
    argv: list[str]


def export_sqlite(nsys: str, report: Path, out: Path, *, stdout: int | None = None) -> Path:
    """`nsys export --type sqlite` of `report` to `out`."""
    code = run_stoppable(export_argv(nsys, report, out), stdout=stdout)
    if code != 0 or not out.exists():
        raise FdoError(f"nsys export of {report} failed (exit status {code})")
    return out


def profile(
    command: Sequence[str],
    *,
    name: str | os.PathLike[str],
    capture: str = "measure",
    nsys: str | os.PathLike[str] | None = None,
    quiet_stdout: bool = False,
    scrub: bool = False,
    cuda_graph_trace: str = "graph",
) -> ProfileRun:
    """Run the fdoverlap `command` under nsys, then export the report to SQLite beside it.

    `quiet_stdout` sends the command's and nsys's stdout to stderr (stdout then holds only our JSON);
    `scrub` takes the machine's environment and working directory out of the export (nsys.scrub).
    """
    exe = find_nsys(nsys)
    base = report_name(name)
    argv, env = profile_argv(exe, base, capture, command, cuda_graph_trace)
    stdout = _stderr_fd() if quiet_stdout else None
    results = results_file(command)
    before = _file_version(results)  # a run.json already there must not pass for this run's, nor be deleted
    code = run_stoppable(argv, env=env, stdout=stdout)
    report, sqlite = output_files(name)
    if code == ExitCode.BAD_INPUT:  # the command refused its options or input: it ran nothing
        return ProfileRun(report, sqlite, None, code, argv)
    if not report.exists():
        raise FdoError(f"nsys wrote no report {report} (exit status {code})")
    export_sqlite(exe, report, sqlite, stdout=stdout)
    if scrub:
        from fdoverlap_cli.nsys.scrub import scrub_export

        scrub_export(sqlite, in_place=True)
    fresh = results is not None and _file_version(results) not in (None, before)
    return ProfileRun(report, sqlite, results if fresh else None, code, argv)


def _file_version(path: Path | None) -> tuple[int, ...] | None:
    """What changes when a file is written again (None: no file)."""
    try:
        info = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if info is None else (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


@contextlib.contextmanager
def sqlite_export(
    path: str | os.PathLike[str],
    nsys: str | os.PathLike[str] | None = None,
    wrote: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """The SQLite export to read for `path`: the file itself, or for an .nsys-rep its export (an up-to-date
    REPORT.sqlite beside it is reused; else one is written beside it, passed to `wrote`, or in a temporary
    folder)."""
    p = Path(path)
    if p.suffix != ".nsys-rep":
        yield p
        return
    if not p.exists():
        raise InputError(str(p), "no such file")
    beside = p.with_suffix(".sqlite")
    if beside.exists() and beside.stat().st_mtime >= p.stat().st_mtime:
        yield beside
        return
    exe = find_nsys(nsys)
    if os.access(p.parent, os.W_OK):
        export_sqlite(exe, p, beside, stdout=_stderr_fd())
        if wrote is not None:
            wrote(beside)
        yield beside
        return
    with tempfile.TemporaryDirectory(prefix="fdoverlap-nsys-") as tmp:
        yield export_sqlite(exe, p, Path(tmp) / beside.name, stdout=_stderr_fd())
