"""Every output file is written whole or not at all, with the permissions the umask gives.

Each writer (trace synth and import -o, replay -o, compare --timeline, analyze --timeline, the run
figure) is made to fail part-way through writing over an existing file, with a full disk or with a
signal: the old content stays, no temporary file is left, and the CLI says so in one line.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import threading
import time
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


# --------------------------------------------------------------------------- what an output name may be


def _one_line(capsys: pytest.CaptureFixture[str], args: list[str], code: int = 2) -> str:
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return err


def _synth(out: Any) -> list[str]:
    return ["trace", "synth", "-n", "2", "-o", str(out)]


def test_a_device_is_written_through_and_never_replaced(capsys, tmp_path):
    """Through links to /dev/full and /dev/null (a link: a build that replaced the target would replace the
    link here, never a device of the machine): the write error is one line, and the devices stay devices."""
    full, null = tmp_path / "full", tmp_path / "null"
    full.symlink_to("/dev/full")
    null.symlink_to("/dev/null")
    err = _one_line(capsys, _synth(full))
    assert err == f"fdoverlap: error: {full}: cannot write: No space left on device"
    assert _one_line(capsys, _synth(null), code=0) == ""
    for link, device in ((full, "/dev/full"), (null, "/dev/null")):
        assert link.is_symlink() and os.readlink(link) == device
        assert os.stat(device).st_mode & 0o170000 == 0o020000  # still a character device
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_block_device_is_refused(capsys, tmp_path):
    device = next((d for d in sorted(Path("/dev").glob("loop*")) if d.is_block_device()), None)
    if device is None:
        pytest.skip("no block device here")
    link = tmp_path / "disk"
    link.symlink_to(device)
    assert "cannot write: is a block device" in _one_line(capsys, _synth(link))
    assert link.is_symlink() and device.is_block_device()


def test_a_fifo_is_written_to_its_reader(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    held_open = _writer_once_read(fifo)  # the reader is there; it reads to the end once this closes too
    try:
        assert _one_line(capsys, _synth(fifo), code=0) == ""
    finally:
        os.close(held_open)
    reader.join(timeout=30)
    assert json.loads(received[0])["format"] == "fdoverlap-trace"
    assert fifo.is_fifo()


def _writer_once_read(fifo: Path) -> int:
    """A write end of `fifo`, opened as soon as a process has it open for reading."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            assert e.errno == errno.ENXIO
            time.sleep(0.01)


def test_a_fifo_nobody_reads_is_refused_at_once(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _one_line(capsys, _synth(fifo)) == f"fdoverlap: error: {fifo}: cannot write: no process reads from this FIFO"
    assert fifo.is_fifo()


@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "dangling"])
def test_a_symlink_is_followed_and_kept(capsys, tmp_path, dangling):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    if not dangling:
        target.write_bytes(OLD)
    link.symlink_to(target.name)
    assert _one_line(capsys, _synth(link), code=0) == ""
    assert link.is_symlink() and os.readlink(link) == target.name
    assert json.loads(target.read_text())["format"] == "fdoverlap-trace"


def test_a_symlink_loop_is_one_line(capsys, tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    assert _one_line(capsys, _synth(tmp_path / "a")).endswith("cannot write: a loop of symbolic links")


def test_names_that_cannot_be_written(capsys, tmp_path):
    assert _one_line(capsys, _synth("")) == "fdoverlap: error: '': cannot write: the file name is empty"
    deep = tmp_path / "missing" / "a" / "b.json"
    err = _one_line(capsys, _synth(deep))
    assert err == f"fdoverlap: error: {deep}: cannot write: no such directory {tmp_path / 'missing'}"
    assert not (tmp_path / "missing").exists()  # a path of folders is not made, least of all from / down
    assert _one_line(capsys, _synth(tmp_path / "new" / "t.json"), code=0) == ""  # the file's own folder is
    assert json.loads((tmp_path / "new" / "t.json").read_text())["format"] == "fdoverlap-trace"
    for name in ("x" * 300, "x/" * 3000):  # a name, and a whole path, over the OS's limits
        err = _one_line(capsys, _synth(tmp_path / name))
        assert err.endswith("cannot write: the name is longer than the file system allows") and len(err) < 400


def test_a_name_just_within_the_limit_is_written(capsys, tmp_path):
    """The temporary file beside it must not be what exceeds the limit."""
    target = tmp_path / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 5) + ".json")
    assert _one_line(capsys, _synth(target), code=0) == ""
    assert json.loads(target.read_text())["format"] == "fdoverlap-trace"


@pytest.mark.parametrize("how", ["same name", "symlink", "hard link", "relative"])
def test_an_import_refuses_to_write_over_its_csv(capsys, tmp_path, monkeypatch, how):
    csv = tmp_path / "in.csv"
    csv.write_text(AZURE_CSV)
    out = {"same name": csv, "symlink": tmp_path / "out.json", "hard link": tmp_path / "out.json", "relative": "in.csv"}
    if how == "symlink":
        (tmp_path / "out.json").symlink_to(csv)
    elif how == "hard link":
        os.link(csv, tmp_path / "out.json")
    monkeypatch.chdir(tmp_path)
    err = _one_line(capsys, ["trace", "import", "azure", str(csv), "-o", str(out[how])])
    assert err.endswith(f"is the same file as the CSV {csv}: refusing to overwrite an input")
    assert csv.read_text() == AZURE_CSV


def test_refuse_overwriting_inputs(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("{}")
    refuse = fileio.refuse_overwriting_inputs
    refuse({"-o": b, "--timeline": tmp_path / "c.json"}, {"the trace": a})
    refuse({"-o": "-", "--timeline": "-"}, {"the trace": "-"})  # standard output, standard input
    refuse({"-o": "/dev/null", "--timeline": "/dev/null"}, {"the trace": "/dev/null"})  # shared devices are fine
    refuse({"-o": None}, {"the trace": a})
    with pytest.raises(InputError, match=r"--timeline .*b.json: is the same file as -o .*b.json: each output"):
        refuse({"-o": b, "--timeline": tmp_path / "." / "b.json"})  # two outputs, neither written yet
    with pytest.raises(InputError, match="refusing to overwrite an input"):
        (tmp_path / "x").mkdir()
        refuse({"--png": a}, {"the results": tmp_path / "x" / ".." / "a.json"})
