"""Test-only: a stalled PULL side for the ZMQ output path, loaded through PYTHONPATH by the output reader.

With FDOVERLAP_TEST_PULL_GATE=<file> set, the reader's ZmqReceiver holds one message in its pipe (RCVHWM 1)
and takes its first message only once <file> exists: the sender's socket and then its queue fill, and the
test opens the gate when it has seen the back-pressure it wants to count. Any other sitecustomize on the
path still runs.
"""

from __future__ import annotations

import importlib
import os
import sys
import time


def _install(gate: str) -> None:
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


if os.environ.get("FDOVERLAP_TEST_PULL_GATE"):
    _install(os.environ["FDOVERLAP_TEST_PULL_GATE"])
_chain()
