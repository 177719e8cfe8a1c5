"""A replay or a comparison end to end: one typed configuration -> trace -> engine -> one RunResult.

`ReplayConfig` is the one set of options `replay` and `compare` share. The session keeps whatever
was measured: `result()` after an interrupted `run()` holds the completed paths and the partial one,
marked incomplete. It records; `RunResult.view(window)` derives.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fdoverlap_cli import kernel_choices
from fdoverlap_cli import ops as op_library
from fdoverlap_cli.engine.bookkeeping import digest
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.graphs import GRAPH_MODES
from fdoverlap_cli.engine.model import model_config
from fdoverlap_cli.engine.output_ipc import OUTPUT_IPCS
from fdoverlap_cli.engine.parallel import RankContext
from fdoverlap_cli.engine.replay import Engine, PathRun
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.engine.token_check import check_against_trace, compare_streams, token_steps
from fdoverlap_cli.errors import InputError, OptionError
from fdoverlap_cli.measure import clock
from fdoverlap_cli.measure.derive import Window
from fdoverlap_cli.measure.records import Track
from fdoverlap_cli.measure.schema import GPU_POINTS, MEASURE, PATHS, trace_payload
from fdoverlap_cli.platform import probe
from fdoverlap_cli.results import ClockInfo, PathRecord, ReaderSummary, RunResult, environment
from fdoverlap_cli.trace import load_trace_and_digest

CPU_NOTE = (
    "CPU run: every copy and wait is synchronous on the CPU, so what the overlap hides cannot be measured here; "
    "this run checks that both paths emit the same tokens."
)

# (phase, done, total, note): each phase the session starts it also finishes (done == total) unless the
# run stops; `note` is a line worth saying even where no progress bar is drawn (the op library's compile).
Progress = Callable[[str, int, int, str | None], None]


@dataclass(frozen=True)
class ReplayConfig:
    """Everything a replay or comparison does, as one typed set (the CLI's flags map onto its fields)."""

    trace_file: Path
    paths: tuple[str, ...] = PATHS
    device: str = "auto"  # auto, cpu or gpu
    preset: str = "auto"  # a model preset; auto: tiny on a CPU, 8b on a GPU
    layers: int | None = None
    dims: str | None = None  # explicit model dimensions, 'hidden_size=1024,ffn_size=4096'
    fused_layers: bool = True  # one op per decoder layer (else one per kernel)
    cuda_graph: str = "auto"  # decode-only batches as CUDA graphs: auto (on a GPU), on, off (engine/graphs.py)
    runner: RunnerOptions = field(default_factory=RunnerOptions)  # its `design`: the runner (develop, pr6176)
    output_ipc: str = "msgqueue"  # how save sends the tokens to the output reader (engine/output_ipc.py)
    warmup_steps: int = 8
    window: Window | None = None  # the steps the output covers
    cuda_profiler_range: bool = False  # cudaProfilerStart/Stop around the measured paths
    tp: int = 1  # tensor-parallel ranks (tp_session.py starts them through paddle's launcher)
    command: tuple[str, ...] = ()  # the command line, for the record

    def __post_init__(self) -> None:
        for p in self.paths:
            if p not in PATHS:
                raise OptionError("path", f"expected sync or overlap, got '{p}'")
        if self.tp < 1:
            raise OptionError("tp", f"must be at least 1, got {self.tp}")
        if self.cuda_graph not in GRAPH_MODES:
            raise OptionError("cuda_graph", f"expected auto, on or off, got '{self.cuda_graph}'")
        if self.output_ipc not in OUTPUT_IPCS:
            raise OptionError("output_ipc", f"expected {' or '.join(OUTPUT_IPCS)}, got '{self.output_ipc}'")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(trace_file=str(self.trace_file), paths=list(self.paths), command=list(self.command))
        d["window"] = list(self.window) if self.window else None
        return d


_COMPILING = "compiling the op library for these sources, once: later runs load it from {where}"


def _runs_on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not probe().has_gpu)


def resolve_preset(preset: str, device: str) -> str:
    """`auto` is the 8B-class model where a GPU will run it, the tiny one on a CPU."""
    if preset != "auto":
        return preset
    return "8b" if device != "cpu" and probe().has_gpu else "tiny"


class ReplaySession:
    """Loads the trace, builds the engine, replays the configured paths, and records the RunResult."""

    def __init__(self, config: ReplayConfig, rank: RankContext | None = None) -> None:
        """`rank`: this process as one rank of a tensor-parallel replay (None: the whole model here)."""
        self.config = config
        self.rank = rank
        self.trace, self.trace_sha256 = load_trace_and_digest(config.trace_file)  # the bytes replayed, hashed
        self.kernels = kernel_choices.current()  # as the model built below reads them
        self.model_cfg = model_config(resolve_preset(config.preset, config.device), config.layers, config.dims)
        if self.model_cfg.dtype == "float16" and _runs_on_cpu(config.device):  # before gigabytes are allocated
            raise OptionError(
                "dims" if "dtype" in (config.dims or "") else "preset",
                f"model '{self.model_cfg.name}' is float16, which runs on a GPU only (paddle's CPU matmul has no "
                "float16 kernel); on the CPU use --preset tiny, or --dims dtype=float32",
            )
        eos, vocab = self.trace.config.eos_token_id, self.model_cfg.vocab_size
        if eos >= vocab:  # the model could never emit it, and the replay writes it as each request's last token
            raise InputError(f"{config.trace_file}: config.eos_token_id", f"{eos} is not below vocab_size {vocab}")
        steps = len(self.trace.steps)
        if config.window is not None and config.window[0] >= steps:
            raise OptionError("window", f"starts at step {config.window[0]}, past the trace's last step {steps - 1}")
        self.device: Device | None = None
        self.engine: Engine | None = None
        self._runs: list[PathRun] = []

    def run(self, progress: Progress | None = None, reuse: ReplaySession | None = None) -> None:
        """Replay the configured paths; `reuse`: a session that ran the same trace, model and graph mode, whose
        engine (model, buffers, graphs) replays them under this session's runner and output path."""
        cfg = self.config
        say = progress or (lambda *_: None)
        cached = op_library.status()
        say("op library", 0, 1, None if cached else _COMPILING.format(where=op_library.ops_cache_dir()))
        if reuse is not None:
            self.device = reuse.device
        else:
            self.device = Device.open(cfg.device, self.rank.local_device) if self.rank else Device.open(cfg.device)
        built = None if cached else op_library.status()
        say("op library", 1, 1, built and f"op library compiled in {built.seconds:.0f} s: {built.path.parent}")
        say("model", 0, 1, None)
        if reuse is not None and reuse.engine is not None:
            same = (reuse.trace_sha256, reuse.model_cfg, reuse.config.fused_layers, reuse.config.cuda_graph)
            if same != (self.trace_sha256, self.model_cfg, cfg.fused_layers, cfg.cuda_graph) or self.rank:
                raise OptionError("reuse", "the engine to reuse replays another trace, model or graph mode")
            self.engine = reuse.engine
            self.engine.reconfigure(cfg.runner, cfg.output_ipc)
        else:
            self.engine = Engine(
                self.trace,
                self.device,
                self.model_cfg,
                cfg.runner,
                cfg.fused_layers,
                trace_payload(self.trace_sha256),
                cfg.cuda_graph,
                self.rank,
                cfg.output_ipc,
            )
        self._runs = self.engine.runs  # this session's: a later session reusing the engine starts a new list
        say("model", 1, 1, None)
        say("warm-up", 0, 1, None)
        self.engine.warm_up(cfg.warmup_steps)
        say("warm-up", 1, 1, None)
        n = len(self.trace.steps)
        with self.engine.annotator.range(MEASURE):
            if cfg.cuda_profiler_range:
                self.device.profiler_start()
            try:
                for path in cfg.paths:
                    say(path, 0, n, None)
                    step_done = (lambda k, p=path: progress(p, k + 1, n, None)) if progress else None
                    self.engine.replay(path, step_done)
                    say(path, n, n, None)  # also when the path skipped the trace's idle last steps
            finally:
                if cfg.cuda_profiler_range:
                    self.device.profiler_stop()

    def result(self) -> RunResult:
        """What was measured: complete paths, and a partial one after an interruption."""
        cfg, dev = self.config, self.device
        result = RunResult(
            command=list(cfg.command),
            environment=environment(dev.info.to_dict() if dev else None, dev.kind if dev else "none", self.kernels),
            trace={
                "file": str(cfg.trace_file),
                "sha256": self.trace_sha256,
                "requests": len(self.trace.requests),
                "steps": len(self.trace.steps),
                "config": asdict(self.trace.config),
                "meta": self.trace.meta,
            },
            model=self.model_cfg.to_dict(),
            options=cfg.to_dict(),
            window=cfg.window,
            graphs=self.engine.graph_capture if self.engine else None,
            eager_warmup=self.engine.eager_warmup if self.engine else None,
        )
        if dev is not None and not dev.is_gpu:
            result.notes.append(CPU_NOTE)
        runs = {run.path: run for run in self._runs}
        for name, run in runs.items():
            result.paths[name] = self._record(run)
        if {"sync", "overlap"} <= runs.keys() and runs["sync"].reader and runs["overlap"].reader:
            a, b = runs["sync"].reader.tokens, runs["overlap"].reader.tokens
            result.identity = compare_streams(self.trace, a, b, ("sync", "overlap"))
        return result

    @functools.cached_property
    def produced(self) -> dict[str, list[int]]:
        """Per request: the steps of its first and last token and the tokens between (TPOT per request)."""
        return {rid: [s[0], s[-1], len(s)] for rid, s in token_steps(self.trace).items() if s}

    def _record(self, run: PathRun) -> PathRecord:
        columns = dict(run.host)
        alignment = None
        if run.gpu is not None and len(run.gpu) and run.clock_start is not None:
            alignment = clock.align(run.clock_start, run.clock_end)
            for j, name in enumerate(GPU_POINTS):
                col = run.gpu[:, j]
                columns[name] = np.where(col >= 0, alignment.to_host(col), -1).astype(np.int64)
        reader, tokens = None, {}
        if run.reader is not None:
            r = run.reader
            reader = ReaderSummary(
                messages=r.messages,
                stop_messages=r.stop_messages,
                markers=[list(m) for m in r.markers],
                anomalies=r.anomalies,
                anomaly_count=r.anomaly_count,
                output_check=check_against_trace(self.trace, r.tokens, r.markers),
            )
            steps = self.produced
            tokens = {
                rid: {"count": len(t), "sha256": digest(t), "steps": steps.get(rid)} for rid, t in r.tokens.items()
            }
        elif run.finished:  # a tensor-parallel rank that does not send: the tokens it sampled
            counts = {req.id: req.output_len for req in self.trace.requests}
            steps = self.produced
            tokens = {
                rid: {"count": counts[rid], "sha256": d, "steps": steps.get(rid)} for rid, d in run.finished.items()
            }
        return PathRecord(
            name=run.path,
            complete=run.complete,
            columns=columns,
            copy_track=Track.COPY_STREAM if self.config.runner.copy_stream == "separate" else Track.COMPUTE_STREAM,
            tokens=tokens,
            reader=reader,
            queue_full_waits=run.full_queue_waits,
            clock=ClockInfo(**alignment.to_dict()) if alignment else None,
        )
