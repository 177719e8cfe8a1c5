"""Building and caching the op library: the key, reuse, compile errors, concurrent builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdoverlap_cli import ops as op_library
from fdoverlap_cli.errors import FdoError
from tests.conftest import REPO, run_cli

# A source tree that compiles in a moment (no paddle headers): for tests that build but never load.
TINY_LIBRARY = "int fdoverlap_build_test() { return 1; }\n"
BUILD_IN_CHILD = "import json; from fdoverlap_cli import ops; print(json.dumps(ops.build().to_dict()))"


@pytest.fixture
def sources(tmp_path, monkeypatch) -> Path:
    """A copy of custom_ops/ that the build uses, and an empty cache."""
    copy = tmp_path / "custom_ops"
    shutil.copytree(REPO / "custom_ops", copy)
    monkeypatch.setenv("FDOVERLAP_OPS_SRC", str(copy))
    monkeypatch.setenv("FDOVERLAP_CACHE_DIR", str(tmp_path / "cache"))
    return copy


def test_cache_key_changes_when_a_source_changes(sources):
    key = op_library.cache_key()
    assert op_library.cache_key() == key
    norm = sources / "model" / "norm.cc"
    norm.write_text(norm.read_text() + "\n// a change\n")
    changed = op_library.cache_key()
    assert changed != key
    (sources / "include" / "extra.h").write_text("#pragma once\n")
    assert op_library.cache_key() not in (key, changed)  # a new file counts too


def test_a_cuda_source_does_not_change_a_cpu_build_key(sources):
    from fdoverlap_cli.platform import probe

    if probe().has_gpu:
        pytest.skip("on a GPU the CUDA sources are part of the build")
    key = op_library.cache_key()
    kernel = sources / "model" / "norm.cu"
    kernel.write_text(kernel.read_text() + "\n// a change\n")
    assert op_library.cache_key() == key


def test_a_second_load_does_not_rebuild(ops):
    info = op_library.build()
    assert info.cached
    assert op_library.status() == info
    assert op_library.load() is ops  # one module per process
    child = subprocess.run([sys.executable, "-c", BUILD_IN_CHILD], capture_output=True, text=True, cwd=REPO)
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == {**info.to_dict(), "cached": True}


def test_a_compile_error_carries_the_compilers_message(sources):
    flag_ops = sources / "flags" / "stop_flag.cc"
    flag_ops.write_text("#error deliberate build failure\n" + flag_ops.read_text())
    with pytest.raises(FdoError) as failure:
        op_library.build()
    message = str(failure.value)
    assert "stop_flag.cc:1" in message and "deliberate build failure" in message
    assert "fdoverlap ops build --verbose" in message
    assert len(message.splitlines()) < 30
    kept_log = Path(message.split("full log: ")[1].split("\n")[0])
    assert "deliberate build failure" in kept_log.read_text()
    assert op_library.status() is None  # nothing half-built was cached


def test_a_compile_error_on_the_command_line_is_one_block_and_exit_2(sources):
    flag_ops = sources / "flags" / "stop_flag.cc"
    flag_ops.write_text("#error deliberate build failure\n" + flag_ops.read_text())
    done = run_cli("ops", "build")
    assert done.returncode == 2
    assert "fdoverlap: error: building the op library failed" in done.stderr
    assert "deliberate build failure" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_entry_without_its_record_is_not_used(sources):
    entry = op_library.ops_cache_dir() / op_library.cache_key()
    entry.mkdir(parents=True)
    (entry / f"{op_library.LIBRARY_NAME}.so").write_bytes(b"half written")
    assert op_library.status() is None


def test_a_source_tree_without_the_library_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("FDOVERLAP_OPS_SRC", str(tmp_path))
    with pytest.raises(FdoError, match="not an op source tree"):
        op_library.cache_key()


@pytest.mark.slow
def test_concurrent_builds_compile_once(tmp_path):
    tiny = tmp_path / "ops"
    tiny.mkdir()
    (tiny / op_library.CPU_SOURCE).write_text(TINY_LIBRARY)
    env = {"FDOVERLAP_OPS_SRC": str(tiny), "FDOVERLAP_CACHE_DIR": str(tmp_path / "cache")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_IN_CHILD],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **env},
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"]
    leftovers = [p.name for p in (tmp_path / "cache" / "ops").iterdir() if p.name.startswith(".build-")]
    assert leftovers == []


def test_compiler_errors_keeps_what_matters():
    log = "\n".join(
        [
            "running build_ext",
            "building 'fdoverlap_ops' extension",
            "gcc -Wsign-compare -O3 -fPIC -c /src/fdoverlap_ops.cc -o x.o",
            "In file included from /src/fdoverlap_ops.cc:4:",
            "/src/model/norm.cc:12:3: error: 'foo' was not declared in this scope",
            "   12 |   foo();",
            "      |   ^~~",
            "compilation terminated due to -Wfatal-errors.",
            "error: command '/usr/bin/gcc' failed with exit code 1",
            "Traceback (most recent call last):",
            '  File "setup.py", line 3, in <module>',
        ]
        + [f"note {i}: error context" for i in range(40)]
    )
    lines = op_library.compiler_errors(log)
    assert lines[0] == "In file included from /src/fdoverlap_ops.cc:4:"
    assert lines[1].endswith("error: 'foo' was not declared in this scope")
    assert "compilation terminated due to -Wfatal-errors." in lines
    assert not any(line.startswith(("gcc ", "error: command", "Traceback", "  File", "running")) for line in lines)
    assert len(lines) == op_library.ERROR_LINES
