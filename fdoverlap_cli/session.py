"""A replay or a comparison end to end: trace -> engine -> timings -> metrics -> one RunResult.

The session keeps whatever was measured: `result()` after an interrupted `run()` holds the
completed paths and the partial one, marked incomplete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fdoverlap_cli.engine.bookkeeping import digest
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.recorder import GPU_POINTS
from fdoverlap_cli.engine.replay import Engine, PathRun
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import clock, metrics
from fdoverlap_cli.measure.records import Track
from fdoverlap_cli.results import PathResult, RunResult, environment
from fdoverlap_cli.trace import load_trace

CPU_NOTE = (
    "CPU run: every copy and wait is synchronous on the CPU, so what the overlap hides cannot be measured here; "
    "this run checks that both paths emit the same tokens."
)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class RunRequest:
    """Everything a replay or comparison needs, as the CLI collected it."""

    trace_path: Path
    paths: tuple[str, ...] = ("sync", "overlap")
    device: str = "auto"
    preset: str = "tiny"
    layers: int | None = None
    dims: str | None = None
    fused_layers: bool = True  # one op per decoder layer (else one per kernel)
    options: RunnerOptions = field(default_factory=RunnerOptions)
    warmup_steps: int = 8
    window: tuple[int, int] | None = None  # the steps the metrics cover
    cuda_profiler_range: bool = False  # cudaProfilerStart/Stop around the measured paths
    command: list[str] = field(default_factory=list)


class ReplaySession:
    """Loads the trace, builds the engine, replays the requested paths, and assembles the RunResult."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.trace = load_trace(request.trace_path)
        self.model_cfg = model_config(request.preset, request.layers, request.dims)
        eos, vocab = self.trace.config.eos_token_id, self.model_cfg.vocab_size
        if eos >= vocab:  # the model could never emit it, and the replay writes it as each request's last token
            raise InputError(f"{request.trace_path}: config.eos_token_id", f"{eos} is not below vocab_size {vocab}")
        self.device: Device | None = None
        self.engine: Engine | None = None

    def run(self, progress: Progress | None = None) -> None:
        req = self.request
        self.device = Device.open(req.device)
        if progress:
            progress("build", 0, 1)
        self.engine = Engine(self.trace, self.device, self.model_cfg, req.options, req.fused_layers)
        if progress:
            progress("warm-up", 0, 1)
        self.engine.warm_up(req.warmup_steps)
        n = len(self.trace.steps)
        with self.engine.annotator.range("measure"):
            if req.cuda_profiler_range:
                self.device.profiler_start()
            try:
                for path in req.paths:
                    step_done = (lambda k, p=path: progress(p, k + 1, n)) if progress else None
                    self.engine.replay(path, step_done)
            finally:
                if req.cuda_profiler_range:
                    self.device.profiler_stop()

    def result(self) -> RunResult:
        """What was measured: complete paths, and a partial one after an interruption."""
        req = self.request
        dev = self.device
        info = dev.info.to_dict() if dev else None
        result = RunResult(
            command=req.command,
            environment=environment(info, dev.kind if dev else "none"),
            trace=self._trace_info(),
            model=self.model_cfg.to_dict(),
            options={
                **asdict(req.options),
                "paths": list(req.paths),
                "fused_layers": req.fused_layers,
                "warmup_steps": req.warmup_steps,
                "window": list(req.window) if req.window else None,
            },
        )
        if dev is not None and not dev.is_gpu:
            result.notes.append(CPU_NOTE)
        for run in self.engine.runs if self.engine else []:
            result.paths[run.path] = self._path_result(run)
        self._compare(result)
        return result

    def _trace_info(self) -> dict[str, Any]:
        p = self.request.trace_path
        return {
            "path": str(p),
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "requests": len(self.trace.requests),
            "steps": len(self.trace.steps),
            "config": asdict(self.trace.config),
            "meta": self.trace.meta,
        }

    def _path_result(self, run: PathRun) -> PathResult:
        columns = dict(run.host)
        alignment = None
        if run.gpu is not None and len(run.gpu) and run.clock_start is not None:
            alignment = clock.align(run.clock_start, run.clock_end)
            for j, name in enumerate(GPU_POINTS):
                col = run.gpu[:, j]
                columns[name] = np.where(col >= 0, alignment.to_host(col), -1).astype(np.int64)
        copy_track = Track.COPY_STREAM if self.request.options.copy_stream == "separate" else Track.COMPUTE_STREAM
        reader: dict[str, Any] = {}
        tokens: dict[str, dict[str, Any]] = {}
        if run.reader is not None:
            r = run.reader
            check = check_against_trace(self.trace, r.tokens, r.markers)
            reader = {
                "messages": r.messages,
                "stop_messages": r.stop_messages,
                "markers": [list(m) for m in r.markers],
                "anomalies": r.anomalies,
                "anomaly_count": r.anomaly_count,
                "check": check.to_dict(),
            }
            tokens = {rid: {"count": len(t), "sha256": digest(t)} for rid, t in r.tokens.items()}
        path = PathResult(
            path=run.path,
            complete=run.complete,
            columns=columns,
            copy_track=copy_track,
            tokens=tokens,
            reader=reader,
            stats={
                "wall_ns": run.wall_ns,
                "executed_steps": len(columns.get("step", ())),
                "batch_tokens": int(columns["tokens"].sum()) if "tokens" in columns else 0,
                "queue_full_waits": run.full_queue_waits,
            },
            clock=alignment.to_dict() if alignment else None,
        )
        m = self._metrics(path)
        if m is not None:
            path.metrics = m.to_dict()
            path.stats["harness_ns_per_decode_step"] = _harness_per_decode_step(m, columns)
        return path

    def _metrics(self, path: PathResult) -> metrics.PathMetrics | None:
        cols = path.columns
        if not len(cols.get("step", ())):
            return None
        first, last = self.request.window or (0, len(self.trace.steps))
        if not path.complete and not ((cols["step"] >= first) & (cols["step"] <= last)).any():
            return None  # interrupted before the window: nothing to measure, and the rest must still be saved
        tokens = dict(zip(cols["step"].tolist(), cols["generated"].tolist(), strict=True))
        return metrics.path_metrics(path.spans(), tokens=tokens, window=self.request.window)

    def _compare(self, result: RunResult) -> None:
        runs = {r.path: r for r in (self.engine.runs if self.engine else [])}
        if not {"sync", "overlap"} <= runs.keys():
            return
        a, b = runs["sync"].reader, runs["overlap"].reader
        if a is not None and b is not None:
            result.check = compare_streams(self.trace, a.tokens, b.tokens, ("sync", "overlap")).to_dict()
        ms, mo = result.paths["sync"].metrics, result.paths["overlap"].metrics
        if ms and mo and runs["sync"].complete and runs["overlap"].complete:  # an interrupted path covers fewer steps
            pm = metrics.PathMetrics.from_dict
            result.comparison = metrics.compare(pm(ms), pm(mo)).to_dict()


def _harness_per_decode_step(m: metrics.PathMetrics, columns: dict[str, np.ndarray]) -> float | None:
    """Mean over decode-only steps of B_k minus the host time spent launching the model's own work.

    What the harness costs the host per step: the engine's insert, the stage bookkeeping, the step
    ops, the copies, the timestamps and the save, but not the forward, logits and sampling launches.
    """
    rows = {int(k): i for i, k in enumerate(columns["step"].tolist())}
    values = [
        busy - columns["model_ns"][rows[k]]
        for k, busy in zip(m.per_step.step.tolist(), m.per_step.host_busy_ns.tolist(), strict=True)
        if k in rows and columns["prefill_tokens"][rows[k]] == 0 and columns["model_ns"][rows[k]] >= 0
    ]
    return float(np.mean(values)) if values else None
