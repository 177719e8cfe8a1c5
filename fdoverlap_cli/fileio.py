"""Output files are written whole or not at all: a temporary file beside the target, then a rename.

A file that cannot be written (a directory in the way, no permission, a full disk) is an InputError
naming it; the temporary file is removed whatever happened, so an existing target keeps its old content.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fdoverlap_cli.errors import InputError


def _umask() -> int:
    # From /proc: setting the umask to read it back would briefly change it for every thread.
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: str | os.PathLike[str], e: OSError) -> InputError:
    return InputError(os.fspath(path), f"cannot write: {e.strerror or e}")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise the InputError a write to `path` would, before a long run produces what goes there."""
    target = Path(path)
    if target.is_dir():
        raise InputError(str(target), "cannot write: is a directory")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(str(target), f"cannot write: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(str(target), f"cannot write: no permission to write in {folder}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`, on error delete it."""
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise _cannot_write(target, e) from None
        raise


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = None) -> None:
    """Serialise `obj` to `path` atomically (UTF-8, keys in insertion order, newline at the end)."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, separators=(",", ": ") if indent else (",", ":"), ensure_ascii=False)
        f.write("\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(text)
