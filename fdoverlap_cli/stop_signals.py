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
def held(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Hold `signals` (the stop signals) back in this thread and in the threads started meanwhile; on exit give
    them back to Python's handlers and deliver what arrived.

    A signal sent to the process can still reach a thread that does not block it (one started before);
    Python would then run its handler in the main thread inside the block. So, in the main thread, the
    block's handlers only note the signal, and it is raised again once the block is done."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    handlers, arrived = {}, []
    for signum in signals:
        if signal.getsignal(signum) is None:  # a handler Python did not install: not Python's to defer
            continue
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            handlers[signum] = signal.signal(signum, lambda n, _frame: arrived.append(n))
    try:
        yield
    finally:
        for signum in signals:
            handler = handlers.get(signum, signal.getsignal(signum))
            if handler is not None:  # None: a handler Python did not install; leave it
                with contextlib.suppress(ValueError):
                    signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)
