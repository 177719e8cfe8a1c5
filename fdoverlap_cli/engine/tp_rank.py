"""One rank of a tensor-parallel replay: what `paddle.distributed.launch` runs N times (not a command).

    python -u tp_rank.py CONFIG RUN_DIR       (started by engine/tp_launch.py)

CONFIG is the parent's ReplayConfig (pickled); the rank writes into RUN_DIR its pid first (`rank{r}.pid`),
rank 0 its progress (`progress`), and at the end, also when interrupted, what it measured
(`rank{r}.json`, a run.json of its own; `rank{r}.extra.json`: pid, messages sent, the tokens each path
sampled) or the error that stopped it (`rank{r}.error`: exit code, tab, one line).
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run as a script: the engine's folder must not shadow modules of the same name

import contextlib
import ctypes
import json
import pickle
import signal
import time
from pathlib import Path
from typing import Any

from fdoverlap_cli import stop_signals
from fdoverlap_cli.errors import ExitCode, FdoError, Interrupted, first_line
from fdoverlap_cli.fileio import write_json, write_text

PR_SET_PDEATHSIG = 1


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _die_with_launcher() -> None:
    """SIGTERM when the launcher dies, however it dies (Linux), so no rank outlives its run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _Progress:
    """Rank 0's progress, for the parent's bar: the latest (phase, done, total) in a file, at most 5 a second."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int, note: str | None) -> None:
        now = time.monotonic()
        if done == total or now - self._last >= 0.2:
            self._last = now
            write_text(self.file, json.dumps([phase, done, total]))


def main(argv: list[str]) -> int:
    config_file, run_dir = Path(argv[1]), Path(argv[2])
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    _die_with_launcher()
    write_text(run_dir / f"rank{rank}.pid", str(os.getpid()))
    for s in stop_signals.STOP_SIGNALS:
        signal.signal(s, _raise)
    session: Any = None
    try:
        with stop_signals.held():
            from fdoverlap_cli.engine.parallel import RankContext
            from fdoverlap_cli.platform import require_paddle
            from fdoverlap_cli.session import ReplaySession

            require_paddle()
        config = pickle.loads(config_file.read_bytes())
        ctx = RankContext.from_env()
        session = ReplaySession(config, ctx)
        session.run(_Progress(run_dir / "progress") if rank == 0 else None)
        return ExitCode.OK
    except Interrupted as e:
        return e.exit_code
    except FdoError as e:
        write_text(run_dir / f"rank{rank}.error", f"{e.exit_code}\t{e}")
        return e.exit_code
    except Exception as e:  # a bug of ours, or paddle's distributed setup failing: the parent says which
        write_text(run_dir / f"rank{rank}.error", f"{ExitCode.INTERNAL}\t{first_line(e)}")
        return ExitCode.INTERNAL
    finally:
        if session is not None:
            _save(session, run_dir, rank)


def _save(session: Any, run_dir: Path, rank: int) -> None:
    """What this rank measured (also when interrupted): its run.json and what only a rank record holds."""
    with stop_signals.held():
        result = session.result()
        if not result.paths:
            return
        runs = session.engine.runs if session.engine else []
        extra = {
            "rank": rank,
            "pid": os.getpid(),
            "device": session.device.name if session.device else None,
            "messages_sent": {run.path: run.messages_sent for run in runs},
            "tokens": {run.path: run.finished for run in runs},
        }
        result.save(run_dir / f"rank{rank}.json")
        write_json(run_dir / f"rank{rank}.extra.json", extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
