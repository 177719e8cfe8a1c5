"""The parent side of a tensor-parallel replay: the CPU barrier it serves and the ranks it starts.

The ranks are started by paddle's own launcher (`python -m paddle.distributed.launch --nproc_per_node N`,
collective mode: NCCL between GPUs, gloo on the CPU), each running `engine/tp_rank.py`; the launcher gives
every rank its own session, stops the others when one fails (`--max_restart 0`: no restarts) and stops them
all on SIGTERM. The parent also knows each rank's pid (a file the rank writes first) and kills what is left
of their process groups, so an interrupted or failed run leaves no rank behind. The CPU barrier is
FastDeploy's: a `threading.Barrier` behind a `multiprocessing` manager (its engine-worker queue's
`worker_process_tp_barrier`), here served by a thread of the parent on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.managers import BaseManager
from pathlib import Path

from fdoverlap_cli.engine.parallel import AUTHKEY_ENV, BARRIER_ENV

RANK_SCRIPT = Path(__file__).with_name("tp_rank.py")
STOP_GRACE_S = 15.0  # how long the launcher gets to stop its ranks before everything left is killed


class _BarrierManager(BaseManager):
    pass


@contextlib.contextmanager
def barrier_server(parties: int) -> Iterator[dict[str, str]]:
    """Serve one `threading.Barrier(parties)` to the ranks; yields the environment that tells them where."""
    barrier = threading.Barrier(parties)
    _BarrierManager.register("tp_barrier", callable=lambda: barrier, proxytype=None, exposed=("wait", "abort"))
    key = secrets.token_bytes(16)
    manager = _BarrierManager(address=("127.0.0.1", 0), authkey=key)
    server = manager.get_server()
    thread = threading.Thread(target=server.serve_forever, name="tp-barrier", daemon=True)
    thread.start()
    host, port = server.address
    try:
        yield {BARRIER_ENV: f"{host}:{port}", AUTHKEY_ENV: key.hex()}
    finally:
        barrier.abort()  # a rank still waiting gets BrokenBarrierError, not a hang
        server.stop_event.set()
        with contextlib.suppress(OSError):
            server.listener.close()


def launcher_command(ranks: int, run_dir: Path, config_file: Path) -> list[str]:
    """paddle's launcher starting `ranks` processes of the rank entry on this host (on a GPU host rank i gets the
    i-th visible GPU, as FLAGS_selected_gpus; on the CPU the backend is gloo)."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--run_mode", "collective"]
    cmd += ["--nproc_per_node", str(ranks), "--max_restart", "0", "--log_dir", str(run_dir / "log")]
    cmd += ["--job_id", f"fdoverlap-{os.getpid()}"]
    return [*cmd, str(RANK_SCRIPT), str(config_file), str(run_dir)]


class RankLauncher:
    """paddle's launcher as a child in its own session, and everything it started."""

    def __init__(self, ranks: int, run_dir: Path, config_file: Path, env: dict[str, str]) -> None:
        self.ranks = ranks
        self.run_dir = run_dir
        package_root = str(Path(__file__).resolve().parents[2])  # the ranks run this copy of fdoverlap
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            launcher_command(ranks, run_dir, config_file),
            env={**os.environ, **env, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait(self, poll: Callable[[], None] | None = None) -> int:
        """The launcher's exit status; `poll()` runs every 0.2 s meanwhile (progress)."""
        while True:
            try:
                return self._proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if poll is not None:
                    poll()

    def rank_pids(self) -> dict[int, int]:
        """The pid each rank wrote when it started."""
        pids = {}
        for r in range(self.ranks):
            with contextlib.suppress(OSError, ValueError):
                pids[r] = int((self.run_dir / f"rank{r}.pid").read_text())
        return pids

    def stop(self) -> None:
        """SIGTERM to the launcher (it stops the ranks); after the grace time SIGKILL to it and every rank left."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=STOP_GRACE_S)
        deadline = time.monotonic() + STOP_GRACE_S
        for pid in self.rank_pids().values():
            while self._is_our_rank(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._is_our_rank(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # each rank leads its own session (the launcher's setsid)
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def _is_our_rank(self, pid: int) -> bool:
        """Whether `pid` is still a rank of this run (its command line names the run folder): no pid is reused."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.run_dir).encode() in cmdline
