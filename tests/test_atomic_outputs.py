"""Every output file is written whole or not at all, with the permissions the umask gives.

Each writer (trace synth and import -o, replay -o, compare --timeline, analyze --timeline, the run
figure) is made to fail part-way through writing over an existing file, with a full disk or with a
signal: the old content stays, no temporary file is left, and the CLI says so in one line.
"""

from __future__ import annotations

import errno
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fdoverlap_cli import fileio
from fdoverlap_cli.cli import main
from fdoverlap_cli.errors import InputError, Interrupted
from tests.loop_model import write_export

OLD = b"the previous content\n"
AZURE_CSV = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12,4\n2023-11-16 18:15:46.7,9,3\n"


class _CutShort:
    """A file object that writes `budget` bytes, then raises `exc` (a full disk, or a signal mid-write)."""

    def __init__(self, f: Any, budget: int, exc: BaseException) -> None:
        self._f, self._budget, self._exc = f, budget, exc

    def write(self, data: Any) -> int:
        n = min(len(data), self._budget)
        self._f.write(data[:n])
        self._budget -= n
        if n < len(data):
            raise self._exc
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _CutShort:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.__exit__(*exc)


@pytest.fixture
def cut_short(monkeypatch) -> Callable[[Path, BaseException], None]:
    """cut_short(target, exc): writes of `target`'s temporary file stop after 64 bytes with `exc`."""

    def arm(target: Path, exc: BaseException) -> None:
        real = os.fdopen

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            f = real(fd, *args, **kwargs)
            name = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if name.parent == target.parent and name.name.startswith(f".{target.name}."):
                return _CutShort(f, 64, exc)
            return f

        monkeypatch.setattr(os, "fdopen", fdopen)

    return arm


def _left_alone(target: Path) -> None:
    assert target.read_bytes() == OLD
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")] == []


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "tiny.json"
    assert main(["trace", "synth", "-n", "3", "--prompt-len", "4..8", "--output-len", "3..5", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nsys") / "sim.sqlite"
    write_export(path, 6)
    return path


def _writers(tiny: Path, export: Path, tmp: Path) -> dict[str, Callable[[Path], list[str]]]:
    """The commands that write a file, each as target -> argv."""
    csv = tmp / "azure.csv"
    csv.write_text(AZURE_CSV)
    run = ["--device", "cpu", "--warmup", "0"]
    return {
        "trace synth -o": lambda t: ["trace", "synth", "-n", "4", "-o", str(t)],
        "trace import azure -o": lambda t: ["trace", "import", "azure", str(csv), "-o", str(t)],
        "replay -o": lambda t: ["replay", str(tiny), *run, "--path", "sync", "-o", str(t)],
        "compare --timeline": lambda t: ["compare", str(tiny), *run, "--timeline", str(t)],
        "analyze --timeline": lambda t: ["analyze", str(export), "--timeline", str(t), "--json"],
    }


WRITERS = ["trace synth -o", "trace import azure -o", "replay -o", "compare --timeline", "analyze --timeline"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_leaves_the_old_file(capsys, tmp_path, tiny_trace, export, cut_short, writer):
    target = tmp_path / "out" / "file.json"
    target.parent.mkdir()
    target.write_bytes(OLD)
    cut_short(target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code = main(_writers(tiny_trace, export, tmp_path)[writer](target))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [f"fdoverlap: error: {target}: cannot write: No space left on device"]
    _left_alone(target)


@pytest.mark.parametrize("writer", ["trace synth -o", "replay -o", "analyze --timeline"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_write_leaves_the_old_file(capsys, tmp_path, tiny_trace, export, cut_short, writer, signum):
    target = tmp_path / "file.json"
    target.write_bytes(OLD)
    cut_short(target, Interrupted(signum))
    code = main(_writers(tiny_trace, export, tmp_path)[writer](target))
    assert code == 128 + signum
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"fdoverlap: interrupted by signal {int(signum)}"
    _left_alone(target)


def test_the_run_figure_is_written_whole_or_not_at_all(tmp_path, cut_short):
    pytest.importorskip("matplotlib")
    from fdoverlap_cli.measure.metrics import path_metrics
    from fdoverlap_cli.render.figures import plot_run
    from tests.loop_model import spans as simulate

    spans = simulate("overlap", 12, start_ns=10**12)
    target = tmp_path / "run.png"
    target.write_bytes(OLD)
    cut_short(target, OSError(errno.EIO, os.strerror(errno.EIO)))
    with pytest.raises(InputError, match="cannot write: Input/output error"):
        plot_run({"overlap": (path_metrics(spans), spans)}, target)
    _left_alone(target)


def test_an_error_of_the_writer_itself_passes_through_and_leaves_the_old_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_bytes(OLD)
    with pytest.raises(ZeroDivisionError), fileio.atomic_open(target) as f:
        f.write("half of the new content")
        print(1 / 0)
    _left_alone(target)


def test_replay_refuses_an_output_it_cannot_write_before_running(capsys, tmp_path, tiny_trace):
    (tmp_path / "a-file").write_text("x")
    for option, target, reason in [
        ("-o", tmp_path, "is a directory"),
        ("--timeline", tmp_path / "a-file" / "t.json", f"{tmp_path / 'a-file'} is not a directory"),
    ]:
        assert main(["replay", str(tiny_trace), "--device", "cpu", option, str(target)]) == 2
        assert capsys.readouterr().err.strip() == f"fdoverlap: error: {target}: cannot write: {reason}"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        new, old = tmp_path / "new.json", tmp_path / "old.json"
        old.write_bytes(OLD)
        old.chmod(0o600)
        for target in (new, old):
            assert main(["trace", "synth", "-n", "2", "-o", str(target)]) == 0
            assert target.stat().st_mode & 0o777 == 0o666 & ~umask
        png = tmp_path / "figure.png"
        with fileio.atomic_open(png, "wb") as f:
            f.write(b"\x89PNG")
        assert png.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(previous)


def test_every_writer_goes_through_fileio():
    """No module writes a file by hand: only fileio does, besides the op build in its own temporary folder
    and the output reader's stderr file (in its temporary folder too)."""
    package = Path(fileio.__file__).parent
    allowed = {"fileio.py", "ops.py"}
    writes = re.compile(
        r"""\.write_(text|bytes)\(|(?<!atomic_)open\([^)]*["'][wax]b?["']|\.savefig\((?!buf)|json\.dump\((?!obj)"""
    )
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if writes.search(line) and "self._err_path" not in line:
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert found == []
