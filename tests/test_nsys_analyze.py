"""`fdoverlap analyze`: the real export, simulated fdoverlap exports, --against, --window, --timeline, .nsys-rep."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from fdoverlap_cli.measure.derive import compare
from fdoverlap_cli.measure.metrics import path_metrics
from fdoverlap_cli.nsys.analysis import analyze
from fdoverlap_cli.nsys.crosscheck import cross_check
from fdoverlap_cli.results import RunResult
from tests.conftest import run_cli
from tests.loop_model import write_export, write_results

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
REAL = FIXTURES / "paddle-h100-nvtx-dtoh.sqlite"
FAKE_NSYS = FIXTURES / "fake_nsys.py"
TRACE_SHA = "5" * 64


def _json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("analyze", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyze")
    expected = write_export(folder / "sim.sqlite", 8, trace_sha256=TRACE_SHA)
    return folder, expected


# --------------------------------------------------------------------------- the real export (not an engine run)


def test_real_export_summary_as_json():
    out = _json(str(REAL))
    assert out["source"]["schema_version"] == "3.20.3"
    assert out["copies"]["by_kind"] == {"htod": 2, "dtoh": 6, "dtod": 0}
    assert out["copies"]["by_destination"] == {"pinned": 6, "pageable": 0, "device": 2}
    assert out["copies"]["pageable_dtoh"]["count"] == 0
    assert out["kernels"]["count"] == 5
    assert out["kernels"]["top"][0]["name"].startswith("sm90_xmma_gemm")
    ranges = {(r["domain"], r["name"]): r["count"] for r in out["nvtx"]["ranges"]}
    assert ranges == {("fdoverlap", n): 5 for n in ("step", "compute", "dtoh", "save")}
    assert 0 < out["gpu"]["busy"] < out["gpu"]["busy_while_active"] <= 1
    assert out["gpu"]["window"] == "profiled session"
    assert out["per_step"]["available"] is False
    assert "preprocess_and_execute_model" in out["per_step"]["reason"]
    assert out["paths"] == {} and out["comparison"] is None


def test_real_export_printed():
    result = run_cli("analyze", str(REAL))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "export schema 3.20.3" in text
    assert "[CUDA memcpy Host-to-Device]" in text and "[CUDA memcpy Device-to-Host]" in text
    assert "pinned 6 · pageable 0 · device 2" in text
    assert "per-step metrics: not available" in text
    assert "not a run of the fdoverlap engine" in text


def test_without_cuda_tables_says_what_it_means(tmp_path):
    import sqlite3

    copy = tmp_path / "nvtx-only.sqlite"
    shutil.copyfile(REAL, copy)
    with sqlite3.connect(copy) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'CUPTI%'").fetchall():
            db.execute(f"DROP TABLE {table}")
    out = _json(str(copy))
    assert any("without CUDA tracing (-t cuda)" in note for note in out["notes"])
    assert out["kernels"]["count"] == 0 and out["copies"]["by_kind"]["dtoh"] == 0
    assert out["per_step"]["available"] is False


# --------------------------------------------------------------------------- simulated engine exports


def test_simulated_paths_and_comparison(simulated):
    folder, expected = simulated
    out = _json(str(folder / "sim.sqlite"))
    assert out["per_step"]["available"] is True
    assert set(out["paths"]) == {"sync", "overlap"}
    want = {p: path_metrics(expected[p]) for p in ("sync", "overlap")}
    for p in ("sync", "overlap"):
        got = out["paths"][p]["metrics"]
        assert got["hidden"] == pytest.approx(want[p].hidden)
        assert got["bubble_ns"]["mean"] == pytest.approx(want[p].bubble_ns.mean)
        assert got["gpu_busy"] == pytest.approx(want[p].gpu_busy)
        assert got["limit_ns"] == want[p].limit_ns
        assert got["steps"] == 8
        assert "per_step" not in got
    assert out["comparison"]["speedup"] == pytest.approx(compare(want["sync"], want["overlap"]).speedup)
    assert out["copies"]["by_destination"]["pageable"] == out["copies"]["pageable_dtoh"]["count"] > 0


def test_simulated_printed(simulated):
    folder, _ = simulated
    result = run_cli("analyze", str(folder / "sim.sqlite"), env={"COLUMNS": "140"})
    assert result.returncode == 0, result.stderr
    assert "per step (fdoverlap)" in result.stdout
    assert "overlap efficiency" in result.stdout
    assert "device-to-host copies into pageable memory" in result.stdout


def test_window(simulated):
    folder, _ = simulated
    out = _json(str(folder / "sim.sqlite"), "--window", "2:5")
    for p in ("sync", "overlap"):
        m = out["paths"][p]["metrics"]
        assert (m["steps"], m["first_step"], m["last_step"]) == (4, 2, 5)


@pytest.mark.parametrize("window", ["5:2", "a:b", "3", "-1:4"])
def test_bad_window(simulated, window):
    folder, _ = simulated
    result = run_cli("analyze", str(folder / "sim.sqlite"), f"--window={window}")
    assert result.returncode == 2
    assert "--window" in result.stderr and "Traceback" not in result.stderr


def test_window_outside_the_steps(simulated):
    folder, _ = simulated
    result = run_cli("analyze", str(folder / "sim.sqlite"), "--window", "50:60")
    assert result.returncode == 2
    assert "no spans in steps 50..60" in result.stderr


def test_against_matching_results_agrees(simulated, tmp_path):
    folder, expected = simulated
    run_json = write_results(expected, tmp_path / "run.json", trace_sha256=TRACE_SHA)
    out = _json(str(folder / "sim.sqlite"), "--against", str(run_json))
    rows = out["against"]["rows"]
    assert {(r["path"], r["quantity"]) for r in rows if not r["quantity"].startswith("exposed.")} == {
        (p, q)
        for p in ("sync", "overlap")
        for q in ("hidden_save_work", "hidden", "compute_mean_ns", "bubble_ns.mean", "gpu_busy")
    }
    exposed = [r for r in rows if r["quantity"].startswith("exposed.")]
    assert {r["quantity"] for r in exposed if r["path"] == "sync"} >= {"exposed.save.mean_ns", "exposed.insert.mean_ns"}
    targeted = [r for r in rows if r["target"] is not None]
    assert len(targeted) == 4 + len(exposed) and all(r["agrees"] for r in targeted)
    hidden = next(r for r in rows if r["path"] == "overlap" and r["quantity"] == "hidden_save_work")
    assert hidden["tool"] > 0.1 and abs(hidden["difference"]) <= 0.02

    printed = run_cli("analyze", str(folder / "sim.sqlite"), "--against", str(run_json), env={"COLUMNS": "160"})
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count("agrees") == 4 + len(exposed) and "differs" not in printed.stdout


def test_against_shifted_saves_differs(simulated, tmp_path):
    folder, expected = simulated
    run_json = write_results(expected, tmp_path / "run.json", save_shift_ns=150_000, trace_sha256=TRACE_SHA)
    against = cross_check(analyze(folder / "sim.sqlite"), RunResult.load(run_json), str(run_json))
    verdict = {(r.path, r.quantity): r.agrees for r in against.rows}
    assert verdict[("sync", "hidden_save_work")] is False  # the shifted saves overlap the next compute
    assert verdict[("overlap", "compute_mean_ns")] is True  # the GPU side is unchanged
    assert verdict[("sync", "bubble_ns.mean")] is None  # shown, no target


def test_against_a_file_that_is_not_results(simulated, tmp_path):
    folder, _ = simulated
    bad = tmp_path / "run.json"
    bad.write_text('{"format": "something-else"}')
    result = run_cli("analyze", str(folder / "sim.sqlite"), "--against", str(bad))
    assert result.returncode == 2
    assert "not an fdoverlap results file" in result.stderr


def _refused(folder: Path, run_json: Path, *fragments: str) -> None:
    result = run_cli("analyze", str(folder / "sim.sqlite"), "--against", str(run_json))
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"fdoverlap: error: {run_json}: ")
    for fragment in fragments:
        assert fragment in result.stderr


def test_against_a_run_of_another_trace_is_refused(simulated, tmp_path):
    folder, expected = simulated
    _refused(folder, write_results(expected, tmp_path / "run.json", trace_sha256="a" * 64), "a run of another trace")


def test_against_a_run_of_another_step_count_is_refused(simulated, tmp_path):
    folder, expected = simulated
    fewer = {p: [s for s in spans if s.step < 6] for p, spans in expected.items()}
    run_json = write_results(fewer, tmp_path / "run.json", trace_sha256=TRACE_SHA)
    _refused(folder, run_json, "its sync path ran 6 steps, the export's 8")


def test_against_a_run_on_another_device_is_refused(simulated, tmp_path):
    folder, expected = simulated
    run_json = write_results(expected, tmp_path / "run.json", trace_sha256=TRACE_SHA, device="cpu")
    _refused(folder, run_json, "a run on the cpu")


def test_timeline(simulated, tmp_path):
    folder, _ = simulated
    timeline = tmp_path / "tl.json"
    result = run_cli("analyze", str(folder / "sim.sqlite"), "--timeline", str(timeline), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    trace = json.loads(timeline.read_text())
    events = trace["traceEvents"]
    processes = sorted(e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name")
    assert processes == ["overlap path", "sync path"]
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {"host", "gpu:compute"}
    launched = sum(
        out["paths"][p]["work"][w]["count"] for p in ("sync", "overlap") for w in ("compute_kernels", "dtoh_copies")
    )
    assert sum(e["ph"] == "s" for e in events) == sum(e["ph"] == "f" for e in events) == launched
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"compute", "copy", "save", "iteration", "event_wait"}


def test_timeline_of_an_export_without_steps(tmp_path):
    result = run_cli("analyze", str(REAL), "--timeline", str(tmp_path / "tl.json"))
    assert result.returncode == 2
    assert "no fdoverlap paths to draw" in result.stderr
    assert not (tmp_path / "tl.json").exists()


# --------------------------------------------------------------------------- .nsys-rep input


def _fake_nsys_env(tmp_path: Path, export: Path) -> dict[str, str]:
    nsys = tmp_path / "bin" / "nsys"
    nsys.parent.mkdir(exist_ok=True)
    nsys.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_NSYS} "$@"\n')
    nsys.chmod(0o755)
    return {"NSYS": str(nsys), "FAKE_NSYS_LOG": str(tmp_path / "nsys.log"), "FAKE_NSYS_EXPORT": str(export)}


def test_nsys_rep_is_exported_beside_it(simulated, tmp_path):
    folder, _ = simulated
    report = tmp_path / "run.nsys-rep"
    report.write_bytes(b"report")
    out = _json(str(report), env=_fake_nsys_env(tmp_path, folder / "sim.sqlite"))
    assert out["per_step"]["available"] is True
    assert (tmp_path / "run.sqlite").exists()
    calls = [json.loads(line)["argv"] for line in (tmp_path / "nsys.log").read_text().splitlines()]
    exported = ["export", "--type", "sqlite", "--force-overwrite=true", "-o", str(tmp_path / "run.sqlite")]
    assert calls == [[*exported, str(report)]]
    # An up-to-date export beside the report is reused.
    _json(str(report), env=_fake_nsys_env(tmp_path, folder / "sim.sqlite"))
    assert len((tmp_path / "nsys.log").read_text().splitlines()) == 1


def test_nsys_rep_export_says_it_wrote_the_sqlite(simulated, tmp_path):
    folder, _ = simulated
    report = tmp_path / "run.nsys-rep"
    report.write_bytes(b"report")
    env = _fake_nsys_env(tmp_path, folder / "sim.sqlite")
    first = run_cli("analyze", str(report), "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert f"wrote {tmp_path / 'run.sqlite'} (the SQLite export of {report})" in first.stderr
    again = run_cli("analyze", str(report), "--json", env=env)  # reused, not written again: nothing said
    assert again.returncode == 0 and "wrote" not in again.stderr


def test_nsys_rep_without_nsys(tmp_path):
    report = tmp_path / "run.nsys-rep"
    report.write_bytes(b"report")
    env = {"NSYS": "", "PATH": os.path.dirname(sys.executable)}
    result = run_cli("analyze", str(report), env=env)
    assert result.returncode == 2
    assert "--nsys PATH or $NSYS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tables_follow_nsys_stats_on_the_real_export():
    """Ranges, kernels and copies carry nsys stats' columns, each computed here again from the export's rows."""
    import sqlite3
    import statistics

    def expected(values: list[int]) -> dict:
        return {
            "count": len(values),
            "total": sum(values),
            "mean": statistics.fmean(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "stddev": statistics.stdev(values) if len(values) > 1 else 0.0,
        }

    def stats(row: dict, unit: str) -> dict:
        return {k.removesuffix(f"_{unit}"): v for k, v in row.items() if k == "count" or k.endswith(f"_{unit}")}

    with sqlite3.connect(REAL) as db:
        named = "FROM NVTX_EVENTS e LEFT JOIN StringIds s ON s.id = e.textId WHERE COALESCE(e.text, s.value) = 'step'"
        step = [d for (d,) in db.execute(f"SELECT e.end - e.start {named} AND e.end IS NOT NULL")]
        kernels = [d for (d,) in db.execute("SELECT end - start FROM CUPTI_ACTIVITY_KIND_KERNEL")]
        dtoh = db.execute("SELECT end - start, bytes FROM CUPTI_ACTIVITY_KIND_MEMCPY WHERE copyKind = 2").fetchall()
    out = _json(str(REAL))
    ranges = {r["name"]: r for r in out["nvtx"]["ranges"]}
    assert stats(ranges["step"], "ns") == pytest.approx(expected(step))
    assert stats(out["kernels"]["top"][0], "ns") == pytest.approx(expected(kernels))
    copies = {op["kind"]: op for op in out["copies"]["operations"]}
    assert stats(copies["dtoh"]["time"], "ns") == pytest.approx(expected([t for t, _ in dtoh]))
    assert stats(copies["dtoh"]["size"], "bytes") == pytest.approx(expected([b for _, b in dtoh]))
    printed = run_cli("analyze", str(REAL)).stdout
    header = "Time (%) ┃ Total (ns) ┃ Instances ┃ Avg (ns) ┃ Med (ns) ┃ Min (ns) ┃ Max (ns) ┃ StdDev (ns) ┃ Range"
    assert header in " ".join(printed.split())
    assert "Total (MB) ┃ Count ┃ Avg (MB)" in " ".join(printed.split())
    row = next(line for line in printed.splitlines() if "[CUDA memcpy Device-to-Host]" in line)
    assert f"{len(dtoh):,}" in row.split("│")[2] and f"{sum(t for t, _ in dtoh):,}" in row  # count, total (ns)
