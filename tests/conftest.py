"""Shared test set-up: the `gpu` marker skips cleanly without a GPU; `ops` builds the op library once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _gpu_available() -> bool:
    from fdoverlap_cli.errors import FdoError
    from fdoverlap_cli.platform import require_paddle

    try:
        paddle = require_paddle()  # the way the tool imports it (the C++ runtime first)
    except FdoError:
        return False
    # Only ask for a device count on a CUDA build: CUDA calls on a CPU build can kill the process.
    return bool(paddle.is_compiled_with_cuda()) and paddle.device.cuda.device_count() > 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _gpu_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU and paddlepaddle-gpu")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def ops():
    """The project's op library, built (or loaded from the cache) once per test session."""
    from fdoverlap_cli import ops as op_library

    return op_library.load()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m fdoverlap_cli ARGS` in a fresh process; returns the completed process (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fdoverlap_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory: pytest.TempPathFactory, ops) -> Path:
    """A real run.json: `compare` of the bundled default trace on the CPU (both paths, identical tokens)."""
    out = tmp_path_factory.mktemp("cpu-run") / "run.json"
    proc = run_cli("compare", "--device", "cpu", "--warmup", "2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def keep_signal_handlers():
    """main() installs its SIGINT/SIGTERM/SIGHUP handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
