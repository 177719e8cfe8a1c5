"""Test-only probes, loaded through PYTHONPATH by every Python process of a run.

With FDOVERLAP_TEST_PROBE=<file> set (the interrupt tests), every SysV message queue an fdoverlap process
creates is appended to <file> as `queue <msqid>` from inside the call that creates it (which runs with the
stop signals held), so the test knows exactly which queues the run made, whoever else on the machine makes
queues meanwhile.
The variable also marks every process of the run (children inherit it), which is how the test finds them.

With FDOVERLAP_TEST_PULL_GATE=<file> set (a stalled PULL side for the ZMQ output path), the reader's
ZmqReceiver holds one message in its pipe (RCVHWM 1) and takes its first message only once <file> exists:
the sender's socket and then its queue fill, and the test opens the gate when it has seen the back-pressure
it wants to count.

Any other sitecustomize on the path still runs.
"""

from __future__ import annotations

import importlib
import os
import sys
import time


def _install(log: str) -> None:
    from fdoverlap_cli.engine import msg_queue

    real = msg_queue._lib

    class _Logged:
        def __init__(self, lib: object) -> None:
            self._lib = lib

        def __getattr__(self, name: str) -> object:
            return getattr(self._lib, name)

        def msgget(self, *args: object) -> int:
            msqid = self._lib.msgget(*args)
            if msqid >= 0:
                with open(log, "a") as f:
                    f.write(f"queue {msqid}\n")
            return msqid

    msg_queue._lib = lambda: _Logged(real())


def _install_pull_gate(gate: str) -> None:
    from fdoverlap_cli.engine import zmq_output

    cls = zmq_output.ZmqReceiver
    init, receive = cls.__init__, cls.receive
    opened = []

    def small_init(self, address, high_water_mark=1):
        init(self, address, high_water_mark=1)

    def gated_receive(self, timeout_ms=None):
        while not opened:
            if os.path.exists(gate):
                opened.append(True)
                break
            time.sleep(0.005)
        return receive(self, timeout_ms)

    cls.__init__ = small_init
    cls.receive = gated_receive


def _chain() -> None:
    """Import the sitecustomize this one shadows, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    mine = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["sitecustomize"] = mine


if os.environ.get("FDOVERLAP_TEST_PROBE"):
    _install(os.environ["FDOVERLAP_TEST_PROBE"])
if os.environ.get("FDOVERLAP_TEST_PULL_GATE"):
    _install_pull_gate(os.environ["FDOVERLAP_TEST_PULL_GATE"])
_chain()
