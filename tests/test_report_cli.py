"""`fdoverlap report` presents a saved run again: tables, JSON, a figure, a timeline."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def run_json(tmp_path_factory, ops):
    out = tmp_path_factory.mktemp("report") / "run.json"
    proc = run_cli("compare", "--device", "cpu", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_prints_the_saved_comparison(run_json):
    proc = run_cli("report", str(run_json))
    assert proc.returncode == 0, proc.stderr
    assert "tokens identical" in proc.stdout


def test_report_png_and_timeline(run_json, tmp_path):
    png, timeline = tmp_path / "run.png", tmp_path / "timeline.json"
    proc = run_cli("report", str(run_json), "--png", str(png), "--gantt", "20:23", "--timeline", str(timeline))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    events = json.loads(timeline.read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)


def test_report_window_recomputes_the_metrics(run_json):
    proc = run_cli("report", str(run_json), "--window", "10:19", "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["paths"]["sync"]["metrics"]
    assert (metrics["first_step"], metrics["last_step"], metrics["steps"]) == (10, 19, 10)


def test_report_of_a_file_that_is_not_a_run_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "trace.json"
    bad.write_text('{"format": "fdoverlap-trace"}')
    proc = run_cli("report", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "not an fdoverlap results file" in proc.stderr


def test_report_png_without_matplotlib_says_how_to_install_it(run_json, tmp_path, monkeypatch, capsys):
    from fdoverlap_cli.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if it were missing
    png = tmp_path / "run.png"
    assert main(["report", str(run_json), "--png", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fdoverlap: error: the Python module 'matplotlib' is not installed")
    assert "pip install matplotlib" in err and "\n" not in err
    assert "-e '." not in err  # the hint holds outside a checkout too
    assert not png.exists()
