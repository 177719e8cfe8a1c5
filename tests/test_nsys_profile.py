"""`fdoverlap profile` with a stand-in nsys: the command lines, export, analysis, --against, and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.nsys.profile import fdoverlap_command, profile_argv, report_name, results_file
from tests.conftest import REPO, run_cli
from tests.loop_model import write_export, write_results

FAKE_NSYS = Path(__file__).parent / "fixtures" / "nsys" / "fake_nsys.py"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profile")
    expected = write_export(folder / "sim.sqlite", 6)
    return folder / "sim.sqlite", write_results(expected, folder / "tool-run.json")


def _nsys(tmp_path: Path) -> Path:
    nsys = tmp_path / "bin" / "nsys"
    nsys.parent.mkdir(exist_ok=True)
    nsys.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_NSYS} "$@"\n')
    nsys.chmod(0o755)
    return nsys


def _env(tmp_path: Path, sqlite: Path, **extra: str) -> dict[str, str]:
    return {"FAKE_NSYS_LOG": str(tmp_path / "nsys.log"), "FAKE_NSYS_EXPORT": str(sqlite), **extra}


def _profile(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`fdoverlap profile --nsys <the stand-in> ARGS`."""
    return run_cli("profile", "--nsys", str(_nsys(tmp_path)), *args, env=env)


def _calls(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "nsys.log").read_text().splitlines()]


def test_profile_runs_exports_and_analyzes_against_the_run(tmp_path, export):
    sqlite, tool_run = export
    run_json = tmp_path / "run.json"
    env = _env(tmp_path, sqlite, FAKE_NSYS_RUN_JSON=str(tool_run))
    result = _profile(
        tmp_path, env, "-o", str(tmp_path / "prof"), "--json", "--", "compare", "--help", "-o", str(run_json)
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # the command's own output went to stderr
    profile_call, export_call = _calls(tmp_path)
    argv = profile_call["argv"]
    trace_options = [
        "-t",
        "cuda,nvtx",
        "-s",
        "none",
        "--cpuctxsw=none",
        "--force-overwrite=true",
        "--cuda-graph-trace=graph",
    ]
    assert argv[: argv.index("-o")] == ["profile", *trace_options]
    assert argv[argv.index("-o") + 1] == str(tmp_path / "prof")
    assert argv[argv.index("-o") + 2 : argv.index("-o") + 7] == [
        "-c",
        "nvtx",
        "-p",
        "measure@fdoverlap",
        "--capture-range-end=stop",
    ]
    app = [sys.executable, "-m", "fdoverlap_cli", "compare", "--help", "-o", str(run_json)]
    assert argv[argv.index("-m") - 1 :] == app
    assert profile_call["env"]["NSYS_NVTX_PROFILER_REGISTER_ONLY"] == "0"
    assert export_call["argv"] == [
        "export",
        "--type",
        "sqlite",
        "--force-overwrite=true",
        "-o",
        str(tmp_path / "prof.sqlite"),
        str(tmp_path / "prof.nsys-rep"),
    ]
    assert out["profile"]["report"] == str(tmp_path / "prof.nsys-rep")
    assert out["profile"]["results"] == str(run_json)
    assert out["per_step"]["available"] is True
    assert all(r["agrees"] for r in out["against"]["rows"] if r["target"] is not None)
    assert "Usage" in result.stderr  # compare --help ran under the stand-in nsys
    for call in (profile_call, export_call):  # nsys ran in a private TMPDIR, removed with what nsys left there
        private = Path(call["env"]["TMPDIR"])
        assert private.name.startswith("fdoverlap-nsys-") and not private.exists()


def test_profile_writes_analyzes_reports(tmp_path, export):
    """profile --markdown/--html: the reports analyze writes of the same export against the same run."""
    sqlite, tool_run = export
    run_json, page, md = tmp_path / "run.json", tmp_path / "prof.html", tmp_path / "prof.md"
    env = _env(tmp_path, sqlite, FAKE_NSYS_RUN_JSON=str(tool_run))
    args = ("-o", str(tmp_path / "prof"), "--html", str(page), "--markdown", str(md))
    result = _profile(tmp_path, env, *args, "--", "compare", "--help", "-o", str(run_json))
    assert result.returncode == 0, result.stderr
    assert f"wrote {page}" in result.stdout and f"wrote {md}" in result.stdout
    again = run_cli("analyze", str(tmp_path / "prof.sqlite"), "--against", str(run_json), "--markdown", "-")
    assert again.returncode == 0, again.stderr
    assert md.read_text() == again.stdout and "| measured steps |" in again.stdout
    assert page.read_text().count("<svg") == 1


@pytest.mark.parametrize(
    ("capture", "options", "extra_arg"),
    [
        ("all", [], None),
        ("cuda-profiler", ["-c", "cudaProfilerApi", "--capture-range-end=stop"], "--cuda-profiler-range"),
    ],
)
def test_capture_modes(tmp_path, export, capture, options, extra_arg):
    sqlite, _ = export
    args = ("-o", str(tmp_path / "prof.nsys-rep"), "--capture", capture, "--", "fdoverlap", "replay", "--help")
    result = _profile(tmp_path, _env(tmp_path, sqlite), *args)
    assert result.returncode == 0, result.stderr
    argv = _calls(tmp_path)[0]["argv"]
    start = argv.index("-o") + 2
    assert argv[start : argv.index(sys.executable)] == options
    app = argv[argv.index(sys.executable) :]
    assert app[:5] == [sys.executable, "-m", "fdoverlap_cli", "replay", "--help"]
    assert app[5:] == ([extra_arg] if extra_arg else [])
    assert argv[argv.index("-o") + 1] == str(tmp_path / "prof")  # nsys adds .nsys-rep itself
    assert "NSYS_NVTX_PROFILER_REGISTER_ONLY" not in _calls(tmp_path)[0]["env"]
    assert "per step" in result.stdout or "per-step metrics" in result.stdout


def test_profile_without_nsys(tmp_path):
    env = {"NSYS": "", "PATH": os.path.dirname(sys.executable)}
    result = run_cli("profile", "--", "compare", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nsys not found" in lines[0] and "--nsys PATH or $NSYS" in lines[0]


def test_profile_with_a_wrong_nsys_path(tmp_path):
    result = run_cli("profile", "--nsys", str(tmp_path / "nope"), "--", "compare")
    assert result.returncode == 2
    assert "not an executable file" in result.stderr


def test_profile_bad_capture(tmp_path, export):
    result = _profile(tmp_path, {}, "--capture", "sometimes", "--", "compare")
    assert result.returncode == 2
    assert "--capture" in result.stderr


def test_profile_needs_a_command(tmp_path):
    result = _profile(tmp_path, {}, "--", "fdoverlap")
    assert result.returncode == 2
    assert "give the fdoverlap command to profile" in result.stderr


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_nsys_and_its_children(tmp_path, export, signum, code):
    sqlite, _ = export
    pid_file = tmp_path / "grandchild.pid"
    env = {**os.environ, **_env(tmp_path, sqlite, FAKE_NSYS_HANG=str(pid_file))}
    nsys = str(_nsys(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdoverlap_cli", "profile", "--nsys", nsys, "-o", str(tmp_path / "p"), "--", "compare"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the stand-in nsys never started its child"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert not _gone(grandchild)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"interrupted by signal {int(signum)}" in stderr
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild), "a process started under nsys survived the interrupt"


# --------------------------------------------------------------------------- command-line pieces


def test_results_file_of_the_command():
    assert results_file(["compare", "-o", "run.json"]) == Path("run.json")
    assert results_file(["compare", "--out", "a/b.json", "--json"]) == Path("a/b.json")
    assert results_file(["replay", "--out=x.json"]) == Path("x.json")
    assert results_file(["replay", "-orun.json"]) == Path("run.json")
    assert results_file(["compare", "--sync"]) is None


def test_command_lines():
    assert report_name("x.nsys-rep") == Path("x") and report_name("dir/x") == Path("dir/x")
    assert fdoverlap_command(["fdoverlap", "compare"], "all") == [sys.executable, "-m", "fdoverlap_cli", "compare"]
    argv, env = profile_argv("nsys", Path("r"), "measure", ["compare"])
    assert argv[:2] == ["nsys", "profile"] and "measure@fdoverlap" in argv
    assert env == {"NSYS_NVTX_PROFILER_REGISTER_ONLY": "0"}
    with pytest.raises(FdoError, match="--capture"):
        profile_argv("nsys", Path("r"), "never", ["compare"])
    assert "--cuda-graph-trace=graph" in argv  # nsys's default, said explicitly
    argv, _ = profile_argv("nsys", Path("r"), "all", ["compare"], cuda_graph_trace="node")
    assert "--cuda-graph-trace=node" in argv and argv.index("--cuda-graph-trace=node") < argv.index("-m")
    with pytest.raises(FdoError, match="--cuda-graph-trace: expected graph or node, got 'kernels'"):
        profile_argv("nsys", Path("r"), "all", ["compare"], cuda_graph_trace="kernels")
