"""The Nsight Systems export reader: the real H100 export, and broken or foreign files (one line, exit 2)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys import statistics
from tests.conftest import run_cli
from tests.loop_model import write_export

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
REAL = FIXTURES / "paddle-h100-nvtx-dtoh.sqlite"


@pytest.fixture(scope="module")
def real():
    with nsys.NsysExport.open(REAL) as export:
        yield export


def test_schema_version_and_product(real):
    assert real.schema_version == "3.20.3"
    assert real.version == (3, 20, 3)
    assert real.warnings == []
    assert real.product.startswith("NVIDIA Nsight Systems 2025.3")


def test_nvtx_ranges_of_the_fdoverlap_domain(real):
    assert real.domains() == {1: "fdoverlap"}
    ranges = list(real.nvtx_ranges())
    assert all(r.push_pop and r.domain == 1 for r in ranges)
    assert [r.start for r in ranges] == sorted(r.start for r in ranges)
    steps = [r for r in ranges if r.name == "step"]
    assert [r.payload for r in steps] == [0, 1, 2, 3, 4]
    names = [r.name for r in ranges]
    assert names.count("compute") == names.count("dtoh") == names.count("save") == 5
    # Each step range holds its compute, dtoh and save ranges.
    for step in steps:
        inside = [r.name for r in ranges if r.name != "step" and step.start <= r.start and r.end <= step.end]
        assert inside == ["compute", "dtoh", "save"]


def test_memory_copies_with_the_exports_own_enums(real):
    kinds, memory = real.enum(nsys.MEMCPY_KINDS), real.enum(nsys.MEMORY_KINDS)
    copies = statistics.copy_totals(real)
    totals = {(kinds[t.copy_kind], memory[t.src_kind], memory[t.dst_kind]): t.count for t in copies}
    assert totals == {
        ("CUDA_MEMCPY_KIND_HTOD", "CUDA_MEMOPR_MEMORY_KIND_PAGEABLE", "CUDA_MEMOPR_MEMORY_KIND_DEVICE"): 2,
        ("CUDA_MEMCPY_KIND_DTOH", "CUDA_MEMOPR_MEMORY_KIND_DEVICE", "CUDA_MEMOPR_MEMORY_KIND_PINNED"): 6,
    }
    assert all(t.bytes == t.count * 16 * 2**20 for t in statistics.copy_totals(real))


def test_kernels_and_their_launches(real):
    totals = list(statistics.kernel_totals(real))
    assert sum(t.count for t in totals) == 5
    assert real.string(totals[0].name_id).startswith("sm90_xmma_gemm")
    api = real.distinct_names(nsys.RUNTIME, "nameId")
    launches = [c for c in real.launches() if c.gpu == nsys.KERNEL]
    assert len(launches) == 5
    assert all(api[c.name_id].startswith("cudaLaunchKernel") and c.start <= c.gpu_start for c in launches)
    copies = [c for c in real.launches() if c.gpu == nsys.MEMCPY]
    assert len(copies) == 8
    assert [c.start for c in real.launches()] == sorted(c.start for c in real.launches())


def test_waits_without_gpu_records_come_when_asked(real):
    api = real.distinct_names(nsys.RUNTIME, "nameId")
    sync = frozenset(i for i, name in api.items() if name.startswith("cudaDeviceSynchronize"))
    calls = [c for c in real.launches(sync) if c.gpu is None]
    assert [api[c.name_id] for c in calls] == ["cudaDeviceSynchronize_v3020"]


def test_gpu_intervals_in_time_order(real):
    intervals = list(real.gpu_intervals())
    assert len(intervals) == 13
    assert [s for s, _ in intervals] == sorted(s for s, _ in intervals)
    assert real.profiled_window() == (425708145, 7717484125)


# --------------------------------------------------------------------------- broken and foreign files


def _one_line_exit_2(path: Path, *expected: str) -> str:
    result = run_cli("analyze", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdoverlap: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_not_sqlite(tmp_path):
    bad = tmp_path / "report.sqlite"
    bad.write_text("this is a text file, not an export\n")
    _one_line_exit_2(bad, "not a SQLite file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    _one_line_exit_2(empty, "empty file")


def test_missing_file(tmp_path):
    _one_line_exit_2(tmp_path / "absent.sqlite", "absent.sqlite")


def test_truncated_export(tmp_path):
    truncated = tmp_path / "truncated.sqlite"
    data = REAL.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    _one_line_exit_2(truncated, "truncated.sqlite", "truncated or corrupt")


def test_sqlite_without_the_export_tables(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE measurements (t INTEGER, value REAL)")
    _one_line_exit_2(other, "not an Nsight Systems export")


def test_empty_sqlite_database(tmp_path):
    db_path = tmp_path / "blank.sqlite"
    with sqlite3.connect(db_path) as db:  # a database with a header but no tables
        db.execute("CREATE TABLE t (x)")
        db.execute("DROP TABLE t")
    _one_line_exit_2(db_path, "empty SQLite database")


def test_unknown_major_schema_version(tmp_path):
    write_export(tmp_path / "v4.sqlite", 2, version="4.0.0")
    line = _one_line_exit_2(tmp_path / "v4.sqlite", "export schema 4.0.0 is not supported")
    assert nsys.WRITTEN_AGAINST in line


def test_unknown_minor_schema_version_warns(tmp_path):
    write_export(tmp_path / "v3_25.sqlite", 2, version="3.25.1")
    result = run_cli("analyze", str(tmp_path / "v3_25.sqlite"), "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: export schema 3.25.1" in result.stderr
    with nsys.NsysExport.open(tmp_path / "v3_25.sqlite") as export:
        assert len(export.warnings) == 1 and "3.25.1" in export.warnings[0]


def test_no_schema_version(tmp_path):
    copy = tmp_path / "noversion.sqlite"
    shutil.copyfile(REAL, copy)
    with sqlite3.connect(copy) as db:
        db.execute("DELETE FROM META_DATA_EXPORT WHERE name = 'EXPORT_SCHEMA_VERSION'")
    _one_line_exit_2(copy, "no EXPORT_SCHEMA_VERSION")


def test_export_without_nvtx_or_cuda_is_nothing_to_analyze(tmp_path):
    copy = tmp_path / "bare.sqlite"
    shutil.copyfile(REAL, copy)
    with sqlite3.connect(copy) as db:
        for table in ("NVTX_EVENTS", *(t for (t,) in db.execute("SELECT name FROM sqlite_master") if "CUPTI" in t)):
            db.execute(f"DROP TABLE {table}")
    _one_line_exit_2(copy, "nothing to analyze", "-t cuda,nvtx")


def test_reader_errors_are_input_errors(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(InputError, match=r"x\.sqlite"):
        nsys.NsysExport.open(bad)
