"""A `--tp N` replay or comparison: N ranks through paddle's launcher, their records merged into one RunResult.

The parent checks what it can before starting anything (the trace, the model, N against the heads, the kv
heads, the intermediate size and the GPUs), builds the op library once (so the ranks only load it), serves
the CPU barrier, starts the ranks (engine/tp_launch.py) and waits; each rank replays the paths with its
shard of the model (engine/tp_rank.py). The result is rank 0's run (it alone sends the output) with every
rank's record under `tensor_parallel`. An interrupt or a failing rank stops them all; what the ranks
measured until then is still merged.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import tempfile
from dataclasses import replace
from pathlib import Path

from fdoverlap_cli import ops as op_library
from fdoverlap_cli import stop_signals
from fdoverlap_cli.engine.parallel import check_tp
from fdoverlap_cli.engine.tp_launch import RankLauncher, barrier_server
from fdoverlap_cli.errors import ExitCode, FdoError, InputError
from fdoverlap_cli.fileio import atomic_open
from fdoverlap_cli.platform import probe
from fdoverlap_cli.results import PathRecord, RankRecord, RunResult, TensorParallel
from fdoverlap_cli.session import Progress, ReplayConfig, ReplaySession, _runs_on_cpu

TP_NOTE = (
    "tensor-parallel run ({size} ranks, {backend}): the paths shown are rank 0's; every rank's step table, "
    "barrier waits and tokens are under tensor_parallel in run.json"
)


class TensorParallelSession:
    """ReplaySession's interface (`run`, `result`) for a replay spread over `config.tp` ranks."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.local = ReplaySession(config)  # the trace, the model and the options, checked before any rank starts
        self.on_gpu = not _runs_on_cpu(config.device)
        check_tp(config.tp, self.local.model_cfg, probe().gpu_count if self.on_gpu else None)
        if config.cuda_graph == "on":
            raise FdoError("--cuda-graph: on needs one rank: the all-reduce of --tp > 1 is not captured in a graph")
        self._dir = Path(tempfile.mkdtemp(prefix="fdoverlap-tp-"))
        self.backend = "nccl" if self.on_gpu else "gloo"
        self.keep_logs = False  # the ranks' folder stays when the error names their logs
        self._merged: RunResult | None = None

    def run(self, progress: Progress | None = None) -> None:
        say = progress or (lambda *_: None)
        cfg = self.config
        cached = op_library.status()
        if cached is None:
            say("op library", 0, 1, f"compiling the op library once, for the {cfg.tp} ranks")
            op_library.load()
        say("op library", 1, 1, None)
        config_file = self._dir / "config.pickle"
        with atomic_open(config_file, "wb", encoding=None) as f:
            f.write(pickle.dumps(cfg))
        seen: list[tuple[str, int, int]] = []

        def poll() -> None:  # rank 0's progress, as the ranks' bar
            with contextlib.suppress(OSError, ValueError):
                phase, done, total = json.loads((self._dir / "progress").read_text())
                if (phase, done, total) not in seen[-1:]:
                    seen.append((phase, done, total))
                    say(phase, done, total, None)

        with barrier_server(cfg.tp) as env:
            launcher = RankLauncher(cfg.tp, self._dir, config_file, env)
            try:
                code = launcher.wait(poll)
            finally:
                launcher.stop()  # also on an interrupt: no rank may outlive the run
                with stop_signals.held():  # what the ranks wrote, read before the folder goes
                    self._merged = self._merge()
        poll()
        if code != 0:
            raise self._rank_error(code)

    def _rank_error(self, code: int) -> FdoError:
        """The first rank's own error line, or the launcher's exit code and where its logs are."""
        for r in range(self.config.tp):
            f = self._dir / f"rank{r}.error"
            if f.exists():
                status, _, message = f.read_text().partition("\t")
                return FdoError(f"tp rank {r}: {message.strip()}", exit_code=int(status or ExitCode.INTERNAL))
        self.keep_logs = True
        return FdoError(
            f"paddle.distributed.launch exited with status {code}; the ranks' logs: {self._dir / 'log'}",
            exit_code=ExitCode.INTERNAL,
        )

    def result(self) -> RunResult:
        """Rank 0's run with every rank's record (what the ranks had measured when one stopped)."""
        if self._merged is None:
            self._merged = self._merge()
        return self._merged

    def _merge(self) -> RunResult:
        ranks: list[RankRecord] = []
        main: RunResult | None = None
        for r in range(self.config.tp):
            run_file, extra_file = self._dir / f"rank{r}.json", self._dir / f"rank{r}.extra.json"
            if not (run_file.exists() and extra_file.exists()):
                continue
            try:
                rank_run = RunResult.load(run_file)
                extra = json.loads(extra_file.read_text())
            except (InputError, OSError, ValueError):
                continue
            main = rank_run if r == 0 else main
            ranks.append(
                RankRecord(
                    rank=r,
                    pid=int(extra["pid"]),
                    device=extra["device"],
                    messages_sent=extra["messages_sent"],
                    tokens=extra["tokens"],
                    paths=dict[str, PathRecord](rank_run.paths) if r else {},
                )
            )
        if main is None:  # rank 0 recorded nothing: an empty run (nothing is written)
            main = replace(self.local.result(), paths={})
        main.command = list(self.config.command)
        main.tensor_parallel = TensorParallel(self.config.tp, self.backend, ranks)
        main.notes.append(TP_NOTE.format(size=self.config.tp, backend=self.backend))
        return main

    def close(self) -> None:
        """Remove the ranks' folder once the run is saved (kept when an error names the logs in it)."""
        import shutil

        if not self.keep_logs:
            shutil.rmtree(self._dir, ignore_errors=True)
