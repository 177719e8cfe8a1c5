"""SIGINT, SIGTERM and SIGHUP stay with Python's handlers while native libraries load.

paddle's import installs a C handler for SIGTERM that prints a C++ report and kills the process (no
cleanup, no partial results; it can also deadlock), and numpy's BLAS starts threads the kernel may
hand a signal to. `held()` keeps these signals pending in the calling thread while such libraries
load, so the threads they start never take them; then it puts Python's handlers back and lets a
signal that arrived meanwhile through (Python runs it in the main thread, as always). The same block
keeps a short critical section (creating a queue, removing a folder) whole.

SIGHUP (the terminal or the ssh session went away) stops a run as SIGTERM does: exit code 129.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold the stop signals back in this thread and in the threads started meanwhile; on exit give them
    back to Python's handlers and deliver what arrived."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not None:  # None: a handler Python did not install; leave it
                with contextlib.suppress(ValueError):  # only the main thread may set handlers
                    signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
