"""`fdoverlap doctor`: the checks, the exit code, and the parsing behind each row."""

from __future__ import annotations

import json
import shutil

import pytest

from fdoverlap_cli import doctor
from fdoverlap_cli.doctor import Check, Diagnosis
from tests.conftest import REPO, run_cli

ROWS = ["fdoverlap", "python", "paddle", "GPU", "driver", "paddle kernels on GPU", "nvcc", "nsys", "op library", "NVTX"]


def test_doctor_json_on_this_machine(ops):
    from fdoverlap_cli.platform import probe

    done = run_cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["can_run"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ROWS
    assert checks["paddle"]["ok"] is True and checks["paddle"]["value"].startswith(probe().paddle_version)
    assert checks["op library"]["ok"] is True and checks["op library"]["value"].startswith("cached")
    if not probe().has_gpu:
        assert checks["GPU"]["value"].startswith("none")
        assert checks["paddle kernels on GPU"]["value"] == "n/a (no GPU)"


def test_doctor_table(ops):
    done = run_cli("doctor")
    assert done.returncode == 0, done.stderr
    for row in ROWS:
        assert row in done.stdout
    assert "fdoverlap can run here" in done.stdout


def test_doctor_exits_1_when_the_op_library_does_not_build(tmp_path):
    broken = tmp_path / "custom_ops"
    shutil.copytree(REPO / "custom_ops", broken)
    (broken / "fdoverlap_ops.cc").write_text("#error deliberate build failure\n")
    env = {"FDOVERLAP_OPS_SRC": str(broken), "FDOVERLAP_CACHE_DIR": str(tmp_path / "cache")}
    done = run_cli("doctor", "--json", env=env)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["can_run"] is False
    library = next(c for c in report["checks"] if c["name"] == "op library")
    assert library["ok"] is False and "build error" in library["value"]


def test_can_run_is_false_only_for_a_failed_check():
    assert Diagnosis([Check("a", "x"), Check("b", "y", ok=True)]).can_run
    assert not Diagnosis([Check("a", "x"), Check("b", "y", ok=False)]).can_run


@pytest.mark.parametrize(
    ("program", "answer"),
    [
        ("print([7.0, 7.0, 7.0, 7.0])", "yes"),
        ("print([0.0, 0.0, 0.0, 0.0])", "no: paddle.full(7) gave [0.0, 0.0, 0.0, 0.0]; fdoverlap uses its own ops"),
        ("import os; os.abort()", "no: the test aborts (exit code -6); fdoverlap uses its own ops"),
    ],
)
def test_paddle_kernel_smoke_test_answers(monkeypatch, program, answer):
    monkeypatch.setattr(doctor, "KERNEL_SMOKE_TEST", program)
    assert doctor.check_paddle_kernels_on_gpu() == Check("paddle kernels on GPU", answer)


def test_nsys_from_the_environment(tmp_path, monkeypatch):
    fake = tmp_path / "nsys"
    fake.write_text("#!/bin/sh\necho 'NVIDIA Nsight Systems version 2025.3.1.90-253135822126v0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NSYS", str(fake))
    assert doctor.check_nsys().value == f"2025.3.1.90-253135822126v0 ({fake})"
    monkeypatch.setenv("NSYS", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert doctor.check_nsys().value.startswith("not found")


def test_nvtx_row_reports_disable_and_no_profiler(monkeypatch):
    monkeypatch.setenv("NVTX_DISABLE", "1")
    value = doctor.check_nvtx().value
    assert "NVTX_DISABLE=1" in value and "profiler not attached" in value


def test_a_missing_nsys_is_a_warning_that_says_what_still_works(tmp_path, monkeypatch):
    from rich.console import Console

    from fdoverlap_cli.render.doctor import render_doctor

    monkeypatch.delenv("NSYS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    check = doctor.check_nsys()
    assert check.warning is True and check.ok is None  # the tool still runs
    assert "`fdoverlap analyze` of an exported .sqlite works without it" in check.value
    report = Diagnosis([Check("paddle", "3.3", ok=True), check])
    assert report.can_run and report.to_dict()["checks"][1]["warning"] is True
    console = Console(width=200, no_color=True, record=True)
    render_doctor(report, console)
    row = next(line for line in console.export_text().splitlines() if line.startswith("nsys"))
    assert row.rstrip().endswith("warning")
