"""Input files read within a bound; output files written whole or not at all, and never over an input.

Writing (`atomic_open`, `write_json`, `write_text`; `check_writable` asks the same questions up front):
- a regular file, or a name not there yet, is written to a temporary file beside it and renamed over
  it, so an existing file keeps its old content unless the new one is complete; a symbolic link is
  followed, and the file it points to is replaced, never the link;
- a character device (/dev/null, /dev/stdout, a terminal) is written directly, a write error being one
  line; a FIFO too, when a process has it open for reading (else nothing would ever take the data);
- the file's own folder is made when only it is missing (`-o results/run.json`); a deeper path of
  missing folders is refused, never made from / down;
- refused, each as one InputError line (exit 2): an empty name, a name longer than the file system
  allows, a directory, a block device, a socket, two or more missing folders.
The temporary file is removed whatever happened.

Reading (`read_input`): at most MAX_INPUT_BYTES from one input file (the whole Azure conversation trace
as a trace is ~4 MB, a 100k-step run.json ~20 MB), so /dev/zero or a runaway pipe ends in one line.

`refuse_overwriting_inputs`: the outputs of a command must not name one of its inputs, nor each other.

The name `-` (STDOUT) is standard output for every writer here: written as it comes, never renamed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fdoverlap_cli.errors import InputError, clip

MAX_INPUT_BYTES = 2**30  # 1 GiB
_CHUNK = 2**20
_TEMP_SUFFIX_BYTES = 14  # "." + "." + mkstemp's 8 characters + ".tmp"
PathLike = str | os.PathLike[str]
STDOUT = "-"  # as an output name: standard output


def _umask() -> int:
    # From /proc: setting the umask to read it back would briefly change it for every thread.
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _where(path: PathLike) -> str:
    text = os.fspath(path)
    return clip(text, 200) if text else "''"


def _cannot_write(path: PathLike, e: OSError) -> InputError:
    if e.errno == errno.ENAMETOOLONG:
        return InputError(_where(path), "cannot write: the name is longer than the file system allows")
    if e.errno == errno.ELOOP:
        return InputError(_where(path), "cannot write: a loop of symbolic links")
    return InputError(_where(path), f"cannot write: {e.strerror or e}")


@dataclass(frozen=True)
class _Target:
    """Where the bytes for an output go: `real` replaced atomically, or written directly."""

    named: Path  # as the user gave it (for messages)
    real: Path  # the file replaced (links resolved), or the device/FIFO written
    direct: bool
    make_folder: bool = False  # real.parent is to be made (its own parent exists)

    def prepare(self) -> None:
        """Make the file's folder if it is the one missing."""
        if self.make_folder:
            self.real.parent.mkdir(exist_ok=True)


def _target(path: PathLike) -> _Target:
    """Resolve an output name, or raise the InputError that writing to it would."""
    text = os.fspath(path)
    if not text:
        raise InputError("''", "cannot write: the file name is empty")
    named = Path(text)
    try:
        mode = os.stat(named).st_mode  # follows links
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # not there yet (or a dangling link): the folder decides, below
    except OSError as e:
        raise _cannot_write(named, e) from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise InputError(_where(named), "cannot write: is a directory")
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return _Target(named, named, direct=True)
        if not stat.S_ISREG(mode):
            kind = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
            raise InputError(_where(named), f"cannot write: is {kind} (outputs are files, devices or FIFOs)")
    real = Path(os.path.realpath(named))
    folder = real.parent
    make_folder = not folder.exists() and folder.parent.is_dir()
    writes_in = folder.parent if make_folder else folder
    if not make_folder and not folder.is_dir():
        reason = f"{folder} is not a directory" if folder.exists() else f"no such directory {folder.parent}"
        raise InputError(_where(named), f"cannot write: {reason}")
    with contextlib.suppress(OSError, ValueError):
        if len(os.fsencode(real.name)) > os.pathconf(writes_in, "PC_NAME_MAX"):
            raise _cannot_write(named, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))
    if not os.access(writes_in, os.W_OK | os.X_OK):
        raise InputError(_where(named), f"cannot write: no permission to write in {writes_in}")
    return _Target(named, real, direct=False, make_folder=make_folder)


def check_writable(path: PathLike) -> None:
    """Raise the InputError a write to `path` would, before a long run produces what goes there."""
    if os.fspath(path) != STDOUT:
        _target(path)


def _temp_prefix(target: Path) -> str:
    """'.NAME.', shortened so that the temporary file's name stays within the file system's limit."""
    try:
        room = os.pathconf(target.parent, "PC_NAME_MAX") - _TEMP_SUFFIX_BYTES
    except (OSError, ValueError):
        room = 255 - _TEMP_SUFFIX_BYTES
    return f".{os.fsdecode(os.fsencode(target.name)[:room])}."


def _open_direct(target: _Target) -> int:
    """Open a device or FIFO for writing; a FIFO nobody reads is refused rather than waited on forever."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    fifo = stat.S_ISFIFO(os.stat(target.real).st_mode)
    try:
        fd = os.open(target.real, flags | (os.O_NONBLOCK if fifo else 0))
    except OSError as e:
        if fifo and e.errno == errno.ENXIO:
            raise InputError(_where(target.named), "cannot write: no process reads from this FIFO") from None
        raise
    if fifo:
        os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open `path` for writing: a temporary file renamed over it on success and deleted on error, or,
    for a device or FIFO, the file itself; `-`: standard output (see the module's docstring)."""
    if os.fspath(path) == STDOUT:
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    target = _target(path)
    text_encoding = None if "b" in mode else encoding
    tmp = None
    try:
        if target.direct:
            with os.fdopen(_open_direct(target), mode, encoding=text_encoding) as f:
                yield f
            return
        target.prepare()
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.real), suffix=".tmp", dir=target.real.parent)
        with os.fdopen(fd, mode, encoding=text_encoding) as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target.real)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise _cannot_write(target.named, e) from None
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that needs a file name (SQLite): renamed over `path`
    when the block succeeds, deleted otherwise. Regular files only: a device, a FIFO or `-` is refused."""
    if os.fspath(path) == STDOUT:
        raise InputError(STDOUT, "cannot write this output to standard output: name a file")
    target = _target(path)
    if target.direct:
        raise InputError(_where(path), "cannot write: is not a regular file (this output must be one)")
    try:
        target.prepare()
    except OSError as e:
        raise _cannot_write(path, e) from None
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.real), suffix=".tmp", dir=target.real.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target.real)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _cannot_write(target.named, e) from None
        raise


def write_json(path: PathLike, obj: Any, *, indent: int | None = None) -> None:
    """Serialise `obj` to `path` atomically (UTF-8, keys in insertion order, newline at the end)."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, separators=(",", ": ") if indent else (",", ":"), ensure_ascii=False)
        f.write("\n")


def write_text(path: PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(text)


# --------------------------------------------------------------------------- reading


def _cannot_read(path: PathLike, what: str, e: OSError) -> InputError:
    where = _where(path)
    if isinstance(e, FileNotFoundError):
        if os.path.islink(path):
            return InputError(where, f"is a symbolic link to {clip(os.readlink(path), 200)}, which does not exist")
        return InputError(where, f"no such {what}")
    if e.errno == errno.EISDIR:
        return InputError(where, f"is a directory, not a {what}")
    if e.errno == errno.ELOOP:
        return InputError(where, "cannot read: a loop of symbolic links")
    if e.errno == errno.ENAMETOOLONG:
        return InputError(where, "cannot read: the name is longer than the file system allows")
    return InputError(where, f"cannot read: {e.strerror or e}")


def _size(n: int) -> str:
    return next(
        (f"{n / unit:g} {name}" for unit, name in ((2**30, "GiB"), (2**20, "MiB")) if n >= unit), f"{n:,} bytes"
    )


def read_input(path: PathLike, what: str, *, text: bool = True, limit: int | None = None) -> bytes:
    """The bytes of input file `path`, at most `limit` (default MAX_INPUT_BYTES) of them; every way it can
    be unreadable is one InputError naming it. A text input stops at its first NUL byte (no text has one)."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    if not os.fspath(path):
        raise InputError("''", f"no such {what} (the name is empty)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _cannot_read(path, what, e) from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise InputError(_where(path), f"is a directory, not a {what}")
    with os.fdopen(fd, "rb", buffering=0) as f:
        too_large = InputError(_where(path), f"is larger than {_size(limit)}, the most fdoverlap reads as a {what}")
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise too_large
        chunks, size = [], 0
        try:
            while chunk := f.read(min(_CHUNK, limit + 1 - size)):
                if text and (nul := chunk.find(b"\0")) >= 0:
                    raise InputError(_where(path), f"is not UTF-8 text (a NUL byte at byte {size + nul})")
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise too_large
        except OSError as e:
            raise _cannot_read(path, what, e) from None
    return b"".join(chunks)


# --------------------------------------------------------------------------- outputs against inputs


def _identity(path: PathLike, *, missing_ok: bool) -> tuple[Any, ...] | None:
    """What makes two names the same file: the inode of an existing regular file, else (an output not
    written yet) its resolved name; None for what may be shared (a device, a FIFO) or is not there."""
    try:
        info = os.stat(path)
    except OSError:
        return ("name", os.path.realpath(path)) if missing_ok else None
    if not stat.S_ISREG(info.st_mode):
        return None
    return ("inode", info.st_dev, info.st_ino)


def refuse_overwriting_inputs(
    outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None] | None = None
) -> None:
    """Raise InputError when an output names an input (the same file after links, or the same inode) or
    another output. Keys say what each file is to the user (an option, 'the trace'); None and '-'
    (standard input/output) are left out.

    Example: refuse_overwriting_inputs({"-o": out, "--timeline": timeline}, {"the trace": trace_path})
    """

    def named(files: Mapping[str, PathLike | None] | None) -> list[tuple[str, PathLike]]:
        return [(label, p) for label, p in (files or {}).items() if p is not None and os.fspath(p) not in ("", STDOUT)]

    seen: dict[tuple[Any, ...], tuple[str, PathLike, bool]] = {}
    for label, p in named(inputs):
        key = _identity(p, missing_ok=False)
        if key is not None:
            seen.setdefault(key, (label, p, True))
    for label, p in named(outputs):
        key = _identity(p, missing_ok=True)
        if key is None:
            continue
        if key in seen:
            other_label, other, is_input = seen[key]
            why = "refusing to overwrite an input" if is_input else "each output needs a file of its own"
            raise InputError(f"{label} {_where(p)}", f"is the same file as {other_label} {_where(other)}: {why}")
        seen[key] = (label, p, False)
