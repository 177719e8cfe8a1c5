"""Never lose data: an output never replaces an input, what was measured is kept, a run records the
trace it replayed, and `profile` neither deletes a file nor hides its command's exit code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.test_bad_input import NSYS_EXPORT, fails
from tests.test_nsys_profile import _calls, _env, _nsys

DEFAULT_TRACE = REPO / "traces" / "default.json"


pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# --------------------------------------------------------------------------- an output that is an input


def test_replay_never_writes_over_its_trace(capsys, tmp_path):
    trace = tmp_path / "t.json"
    shutil.copyfile(DEFAULT_TRACE, trace)
    before = trace.read_bytes()
    fails(capsys, ["replay", trace, "--device", "cpu", "-o", trace], f"-o {trace}: is the same file as the trace")
    link = tmp_path / "link.json"
    link.symlink_to(trace)
    fails(capsys, ["compare", trace, "--device", "cpu", "--timeline", link], "refusing to overwrite an input")
    assert trace.read_bytes() == before


def test_two_outputs_of_one_file(capsys, tmp_path):
    out = tmp_path / "r.json"
    fails(capsys, ["replay", "--device", "cpu", "-o", out, "--timeline", out], "each output needs a file of its own")
    assert not out.exists()


def test_report_never_writes_over_its_run(capsys, cpu_run, tmp_path):
    run = tmp_path / "run.json"
    shutil.copyfile(cpu_run, run)
    before = run.read_bytes()
    for option in ("--png", "--timeline"):
        fails(capsys, ["report", run, option, run], f"{option} {run}: is the same file as the run")
    assert run.read_bytes() == before


def test_analyze_never_writes_over_its_inputs(capsys, cpu_run, tmp_path):
    export, against = tmp_path / "x.sqlite", tmp_path / "run.json"
    shutil.copyfile(NSYS_EXPORT, export)
    shutil.copyfile(cpu_run, against)
    before = export.read_bytes(), against.read_bytes()
    fails(capsys, ["analyze", export, "--timeline", export], "is the same file as the report")
    fails(capsys, ["analyze", export, "--against", against, "--timeline", against], "is the same file as --against")
    assert (export.read_bytes(), against.read_bytes()) == before


# --------------------------------------------------------------------------- what was measured is kept


def test_a_trailing_idle_step_keeps_the_comparison(tmp_path, ops):
    """The sync path skips the idle steps at the end of a trace, the overlap path runs them: both are
    measured over the steps both ran, run.json is written, and the idle steps log nothing of paddle's."""
    doc = json.loads(DEFAULT_TRACE.read_text())
    doc["steps"] += [{}, {}]
    trace, out = tmp_path / "idle-tail.json", tmp_path / "run.json"
    trace.write_text(json.dumps(doc))
    assert run_cli("trace", "validate", str(trace)).returncode == 0
    proc = run_cli("compare", str(trace), "--device", "cpu", "--warmup", "0", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no paddle warning from a zero-token step
    assert "tokens identical" in proc.stdout
    saved = json.loads(out.read_text())
    assert saved["identity"]["identical"] is True
    assert saved["derived"]["steps"] == [0, len(doc["steps"]) - 3]


def test_the_run_records_the_trace_it_loaded(tmp_path):
    """Deleted or replaced after loading, the trace's hash in run.json is that of the bytes replayed."""
    from fdoverlap_cli.session import ReplayConfig, ReplaySession

    trace = tmp_path / "t.json"
    shutil.copyfile(DEFAULT_TRACE, trace)
    loaded = hashlib.sha256(trace.read_bytes()).hexdigest()
    session = ReplaySession(ReplayConfig(trace_file=trace, device="cpu"))
    trace.write_text("replaced")
    assert session.result().trace["sha256"] == loaded
    trace.unlink()
    assert session.result().trace["sha256"] == loaded


def test_the_run_records_the_kernel_choices(monkeypatch):
    """run.json says which GEMM and attention configurations ran: FDOVERLAP_GEMM resolved to its choice (its
    default when unset), the others as set ("" for the op library's default), as they were when the run began."""
    from fdoverlap_cli import kernel_choices
    from fdoverlap_cli.errors import InputError
    from fdoverlap_cli.results_format import check_results
    from fdoverlap_cli.session import ReplayConfig, ReplaySession

    gemm, decode, prefill = kernel_choices.GEMM_ENV, kernel_choices.DECODE_TC_ENV, kernel_choices.PREFILL_TC_ENV
    for name in (gemm, decode, prefill):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(decode, "rows")
    session = ReplaySession(ReplayConfig(trace_file=DEFAULT_TRACE, device="cpu"))
    monkeypatch.setenv(gemm, "paddle")  # after the model was built: not what ran
    doc = session.result().to_dict()
    kernels = doc["environment"]["kernels"]
    assert kernels == {gemm: "decode", decode: "rows", prefill: ""}
    assert ReplaySession(ReplayConfig(trace_file=DEFAULT_TRACE, device="cpu")).kernels[gemm] == "paddle"
    check_results(doc)
    kernels[gemm] = 3
    with pytest.raises(InputError, match=r"environment\.kernels"):
        check_results(doc)


def test_a_trace_from_standard_input_records_its_hash(tmp_path, ops):
    out = tmp_path / "run.json"
    args = ["replay", "/dev/stdin", "--device", "cpu", "--warmup", "0", "--path", "sync", "-o", str(out)]
    with DEFAULT_TRACE.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "fdoverlap_cli", *args], stdin=stdin, capture_output=True, text=True, cwd=REPO
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["trace"]["sha256"] == hashlib.sha256(DEFAULT_TRACE.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- profile


def test_profile_keeps_an_existing_results_file_and_passes_on_exit_2(tmp_path):
    keep = tmp_path / "keep.json"
    keep.write_text("what was there\n")
    env = _env(tmp_path, NSYS_EXPORT)
    proc = run_cli("profile", "--nsys", str(_nsys(tmp_path)), "-o", str(tmp_path / "p"), "--", "compare", "--bogus",
                   "-o", str(keep), env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "No such option: --bogus" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fdoverlap: error: the profiled command refused its input")
    assert keep.read_text() == "what was there\n"
    assert len(_calls(tmp_path)) == 1  # profiled, never exported


def test_profile_never_takes_a_stale_results_file_for_the_run(tmp_path):
    stale = tmp_path / "run.json"
    shutil.copyfile(REPO / "tests" / "fixtures" / "bad" / "run-wrong-format.json", stale)
    env = _env(tmp_path, NSYS_EXPORT)
    args = ["-o", str(tmp_path / "p"), "--json", "--", "compare", "--help", "-o", str(stale)]
    proc = run_cli("profile", "--nsys", str(_nsys(tmp_path)), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["profile"]["results"] is None and stale.exists()


def test_profile_finds_an_unwritable_report_folder_before_the_command(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and real_access(p, mode, **kw))
    monkeypatch.setenv("FAKE_NSYS_LOG", str(tmp_path / "nsys.log"))
    nsys = _nsys(tmp_path)
    fails(capsys, ["profile", "--nsys", nsys, "-o", folder / "p", "--", "compare"], "no permission to write in")
    assert not (tmp_path / "nsys.log").exists()  # nsys never ran
