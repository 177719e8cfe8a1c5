"""How the output reader process learns that the tool died, so that it removes what the dead tool cannot.

The kernel sends PARENT_DEATH_SIGNAL (PR_SET_PDEATHSIG) when the thread that started the reader exits; a
signal of its own, because SIGTERM is also how the tool stops a reader it then cleans up after itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

PARENT_DEATH_SIGNAL = signal.SIGUSR2
PARENT_EXIT_GRACE_S = 2.0  # how long a dying tool may take to be seen gone


def die_with_parent(parent: int) -> None:
    """Ask for PARENT_DEATH_SIGNAL when the tool dies (so a killed tool leaves no reader behind); exit if it has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, PARENT_DEATH_SIGNAL, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(4)


def parent_gone(parent: int, wait_s: float = 0.0) -> bool:
    """Whether the tool has died, waiting up to wait_s for it. Reparented, or its main thread already gone: the
    death signal comes when the thread that started the reader exits, and while the tool's other threads still
    exit the reader's parent is still the tool (its main thread a zombie only at the end)."""
    deadline = time.monotonic() + wait_s
    while True:
        if os.getppid() != parent:
            return True
        try:
            state = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X") or time.monotonic() >= deadline:
            return state in ("Z", "X")
        time.sleep(0.01)


signalled: list[int] = []  # the signals terminate ran for


def terminate(signum: int, _frame: Any) -> None:
    """The reader's handler of the stop and death signals: note it, then leave through SystemExit."""
    signalled.append(signum)
    raise SystemExit(128 + signum)
