"""What an Nsight Systems export gives away: the scrub takes the environment and the working directory out,
and the analysis of the scrubbed file is the analysis of the original.

The committed exports are scrubbed already (tools/scrub_nsys_exports.py), so the tests put back what nsys
records, where it records it (the rows as they were in tests/fixtures/nsys/ before the scrub: this
machine's environment and working directory), into a copy of a real export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fdoverlap_cli.cli import main
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.nsys.scrub import scrub_export
from tests.conftest import REPO, run_cli
from tests.test_nsys_profile import _nsys

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
EXPORTS = sorted(FIXTURES.glob("*.sqlite"))
CWD = os.getcwd()


def _environment() -> dict[str, str]:
    env = {**os.environ, "PWD": CWD}
    env.setdefault("HOME", "/root")
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def _leaky_copy(source: Path, out: Path) -> Path:
    """`source` with the environment and working directory put back as nsys writes them."""
    shutil.copyfile(source, out)
    env = _environment()
    with sqlite3.connect(out) as db:
        rows = [("PROCESS_0:ENVIRONMENT_VARIABLE", f'{k}="{v}"') for k, v in env.items()]
        rows += [("PROCESS_0:WORKING_DIR", CWD), ("PROCESS_0:ARGUMENT_3", f"{CWD}/run.json")]
        db.executemany("INSERT INTO META_DATA_CAPTURE (name, value) VALUES (?, ?)", rows)
        device_env = ";".join(f"{k}={v}" for k, v in env.items())
        db.execute("UPDATE TARGET_INFO_SYSTEM_ENV SET value = ? WHERE name = 'DeviceEnvironment'", (device_env,))
        db.execute("UPDATE TARGET_INFO_SYSTEM_ENV SET value = 'the-capturing-host' WHERE name = 'Hostname'")
        db.execute(
            "UPDATE META_DATA_EXPORT SET value = ? WHERE name = 'EXPORT_PARAM_INPUT_PATH'", (f"{CWD}/r.nsys-rep",)
        )
        top = db.execute("SELECT max(id) FROM StringIds").fetchone()[0]
        block = "\0".join(f"{k}={v}" for k, v in env.items())
        db.executemany("INSERT INTO StringIds (id, value) VALUES (?, ?)", [(top + 1, block), (top + 2, f"PWD={CWD}")])
    return out


def _leaks(path: Path) -> list[str]:
    data = path.read_bytes()
    return [needle for needle in ("PATH=", "HOME=", CWD, "the-capturing-host") if needle.encode() in data]


def _analysis(capsys: pytest.CaptureFixture[str], path: Path) -> dict:
    assert main(["analyze", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    doc["source"].pop("file")
    if doc.get("markers"):  # the steps found without NVTX name their file too
        doc["markers"].pop("file")
    return doc


@pytest.mark.parametrize("export", EXPORTS, ids=lambda p: p.name)
def test_the_committed_exports_carry_no_environment(export):
    assert _leaks(export) == []
    with sqlite3.connect(f"file:{export}?mode=ro", uri=True) as db:
        names = [name for (name,) in db.execute("SELECT name FROM META_DATA_CAPTURE")]
        strings = [value for (value,) in db.execute("SELECT value FROM StringIds")]
    assert not [n for n in names if n.endswith(":ENVIRONMENT_VARIABLE")]
    assert not [s for s in strings if "\0" in s and "=" in s]


@pytest.mark.parametrize("export", EXPORTS, ids=lambda p: p.name)
def test_the_scrubbed_copy_analyzes_as_the_original(capsys, tmp_path, export):
    leaky = _leaky_copy(export, tmp_path / "leaky.sqlite")
    assert {"PATH=", "HOME=", CWD} <= set(_leaks(leaky))
    before = hashlib.sha256(leaky.read_bytes()).hexdigest()
    done = scrub_export(leaky, tmp_path / "clean.sqlite")
    assert done.environment_rows >= len(_environment()) + 2
    assert hashlib.sha256(leaky.read_bytes()).hexdigest() == before  # the input is left alone
    assert _leaks(tmp_path / "clean.sqlite") == []
    assert _analysis(capsys, tmp_path / "clean.sqlite") == _analysis(capsys, leaky) == _analysis(capsys, export)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.sqlite", "leaky.sqlite"]  # nothing else left


def test_in_place_only_when_asked(tmp_path):
    leaky = _leaky_copy(EXPORTS[0], tmp_path / "x.sqlite")
    with pytest.raises(InputError, match="refusing to overwrite an input"):
        scrub_export(leaky, tmp_path / "x.sqlite")
    (tmp_path / "link.sqlite").symlink_to("x.sqlite")
    with pytest.raises(InputError, match="refusing to overwrite an input"):
        scrub_export(leaky, tmp_path / "link.sqlite")
    with pytest.raises(ValueError):
        scrub_export(leaky)
    scrub_export(leaky, in_place=True)
    assert _leaks(leaky) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["link.sqlite", "x.sqlite"]


def test_what_is_not_an_export_is_refused(tmp_path):
    (tmp_path / "text.sqlite").write_text("hello")
    with pytest.raises(InputError, match="not a SQLite file"):
        scrub_export(tmp_path / "text.sqlite", tmp_path / "out.sqlite")
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not an Nsight Systems export"):
        scrub_export(tmp_path / "other.sqlite", tmp_path / "out.sqlite")
    assert not (tmp_path / "out.sqlite").exists()


def test_the_fixture_script(tmp_path):
    leaky = _leaky_copy(EXPORTS[0], tmp_path / "x.sqlite")
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "scrub_nsys_exports.py"), str(leaky)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _leaks(leaky) == []


def test_profile_scrub(tmp_path):
    """`fdoverlap profile --scrub` (with the stand-in nsys, whose export is a leaky copy) writes a clean export."""
    leaky = _leaky_copy(EXPORTS[0], tmp_path / "leaky.sqlite")
    env = {"FAKE_NSYS_LOG": str(tmp_path / "nsys.log"), "FAKE_NSYS_EXPORT": str(leaky)}
    prof = tmp_path / "prof"
    done = run_cli(
        "profile", "--nsys", str(_nsys(tmp_path)), "-o", str(prof), "--scrub", "--json", "--", "--help", env=env
    )
    assert done.returncode == 0, done.stderr
    assert _leaks(tmp_path / "prof.sqlite") == []
    assert _leaks(leaky)  # the stand-in's source, as nsys's own report, keeps what it had
