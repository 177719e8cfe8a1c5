"""Replays a trace through one execute_model path: the worker loop, the output reader, the timing.

`Engine` builds the device, the op library and the model once, and captures the decode CUDA graphs
once (at the end of `warm_up`, or before the first replay); `replay(path)` runs the whole trace
through the sync or the overlap path with a fresh output queue and reader, and returns a `PathRun`
(complete or, when interrupted, what was measured so far).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.engine import memory
from fdoverlap_cli.engine.annotate import Annotator
from fdoverlap_cli.engine.bookkeeping import Bookkeeping, planned_launches
from fdoverlap_cli.engine.buffers import ShareInputs
from fdoverlap_cli.engine.designs import SPECULATIVE_TOKENS
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.graphs import EagerWarmup, GraphCapture, ModelForward, capture_sizes, graphs_enabled
from fdoverlap_cli.engine.model import ModelConfig, SyntheticDecoder
from fdoverlap_cli.engine.msg_queue import check_message_size
from fdoverlap_cli.engine.output_ipc import OUTPUT_IPCS, open_output
from fdoverlap_cli.engine.parallel import RankContext, reducer
from fdoverlap_cli.engine.reader import ReaderResult
from fdoverlap_cli.engine.recorder import StepRecorder
from fdoverlap_cli.engine.runner import ModelRunner, RunnerOptions
from fdoverlap_cli.errors import OptionError
from fdoverlap_cli.measure.schema import PATHS
from fdoverlap_cli.trace import Trace

CLOCK_SAMPLES = 64


@dataclass
class PathRun:
    """One path's replay as the engine measured it (device clock for the GPU columns)."""

    path: str
    complete: bool = False
    host: dict[str, np.ndarray] = field(default_factory=dict)
    gpu: np.ndarray | None = None  # [rows, 6] device-clock timestamps, -1 where not reached
    clock_start: np.ndarray | None = None  # clock_samples() rows before and after the replay
    clock_end: np.ndarray | None = None
    reader: ReaderResult | None = None
    full_queue_waits: int = 0
    messages_sent: int = 0  # save_output calls (0 on a tensor-parallel rank other than 0)
    finished: dict[str, str] = field(default_factory=dict)  # request id -> digest of the tokens it sampled


class _NullSender:
    """Warm-up runs, and tensor-parallel ranks other than 0, send nothing."""

    sent = 0
    full_waits = 0

    def send(self, *_: Any) -> None:
        return None


class Engine:
    """The device, the op library, the model and the buffers for replaying one trace."""

    def __init__(
        self,
        trace: Trace,
        device: Device,
        model_cfg: ModelConfig,
        options: RunnerOptions,
        fused_layers: bool = True,
        trace_id: int | None = None,
        cuda_graph: str = "auto",
        parallel: RankContext | None = None,
        output_ipc: str = "msgqueue",
    ) -> None:
        """`trace_id` goes into each path's NVTX range as its payload, so an nsys export names its trace;
        `cuda_graph` (auto, on, off) whether decode-only batches replay CUDA graphs (graphs.py); `parallel`
        this process's rank of a tensor-parallel replay (parallel.py; None: one rank); `output_ipc` how save
        sends the tokens to the reader (output_ipc.py)."""
        if output_ipc not in OUTPUT_IPCS:
            raise OptionError("output_ipc", f"expected {' or '.join(OUTPUT_IPCS)}, got '{output_ipc}'")
        self.output_ipc = output_ipc
        self.parallel = parallel
        sharded = parallel is not None and parallel.shard.world > 1
        if sharded and cuda_graph == "on":
            raise OptionError("cuda_graph", "on needs one rank: the all-reduce of --tp > 1 is not captured in a graph")
        if sharded:
            cuda_graph = "off"
        self.trace_id = trace_id
        self.trace = trace
        self.device = device
        self.options = options
        self.model_cfg = model_cfg
        graphs = graphs_enabled(cuda_graph, device.has_graphs)  # a mode the device cannot run fails before the model
        need = memory.estimate(model_cfg, trace, len(PATHS), capture_sizes(trace.config.max_num_seqs) if graphs else ())
        # Past it an allocation fails, or on the host is overcommitted and OOM-killed later.
        memory.check(
            need, on_gpu=device.is_gpu, device_bytes=device.info.total_memory_bytes, host_bytes=_host_memory_bytes()
        )
        if output_ipc == "msgqueue":
            check_message_size(trace.config.max_num_seqs)  # before the model: msgsnd would fail mid-run
        self.ops = device.ops
        shard = parallel.shard if parallel is not None else None
        self.model = SyntheticDecoder(model_cfg, device, self.ops, fused_layers, shard, reducer(parallel))
        cfg = trace.config
        self.share = ShareInputs(device, self.ops, cfg, self.model.new_kv_cache(cfg.max_num_seqs, cfg.max_model_len))
        self.forward = ModelForward(device, self.model, self.share, cuda_graph)
        self.book = Bookkeeping(trace, model_cfg.vocab_size)
        self.annotator = Annotator()
        self.runs: list[PathRun] = []

    def reconfigure(self, options: RunnerOptions, output_ipc: str) -> None:
        """Replay the next paths with another runner design or output path on the same model, buffers and
        graphs (a benchmark compares designs without building the model again); forgets the runs so far."""
        if output_ipc not in OUTPUT_IPCS:
            raise OptionError("output_ipc", f"expected {' or '.join(OUTPUT_IPCS)}, got '{output_ipc}'")
        if output_ipc == "msgqueue":
            check_message_size(self.trace.config.max_num_seqs)
        self.options, self.output_ipc, self.runs = options, output_ipc, []

    def _runner(self, sender: Any, recorder: StepRecorder, options: RunnerOptions) -> ModelRunner:
        return ModelRunner(
            self.device,
            self.ops,
            self.model,
            self.share,
            self.book,
            options,
            sender,
            recorder,
            self.annotator,
            self.forward,
            self.parallel.barrier if self.parallel is not None and self.parallel.shard.world > 1 else None,
        )

    @property
    def saves(self) -> bool:
        """Whether this process sends the output: alone, or rank 0 of a tensor-parallel replay."""
        return self.parallel is None or self.parallel.shard.saves

    @property
    def graph_capture(self) -> GraphCapture | None:
        """The decode graphs' sizes, capture time and memory (None: none captured)."""
        return self.forward.capture

    def warm_up(self, steps: int = 8) -> None:
        """Run the first steps of the trace once (kernels loaded, handles and allocator warm), reset, on a GPU
        run every token count the trace launches eagerly once (graphs.py: cuBLAS's first call of a shape), then
        capture the decode CUDA graphs (when they are on)."""
        n = min(steps, len(self.trace.steps))
        if n:
            self.share.reset()
            self.book.reset()
            options = dataclasses.replace(self.options, verify_token_count=False, host_work_us=0)
            runner = self._runner(_NullSender(), StepRecorder(self.device, n + 1, timestamps=False), options)
            for k in range(n):
                runner.iteration(k, self.trace.steps[k], overlap=False)
            self.device.synchronize()
        if self.device.is_gpu and self.forward.warmup is None:  # the CPU has no cuBLAS to warm
            self.forward.warm_eager(self.eager_warmup_counts())
        self.forward.capture_all()

    def eager_warmup_counts(self) -> tuple[int, ...]:
        """The token counts the eager warm-up runs: every eager batch of the trace's planned launches, and every
        decode count up to the slots' bound (a runner may launch a decode batch with a cached upper bound)."""
        plans = planned_launches(self.trace, self.model_cfg.vocab_size)
        decode_bound = self.trace.config.max_num_seqs * (SPECULATIVE_TOKENS + 1)
        launches = [(p.token_num, p.decode_only) for p in plans] + [(n, True) for n in range(1, decode_bound + 1)]
        return self.forward.eager_counts(launches)

    @property
    def eager_warmup(self) -> EagerWarmup | None:
        """The token counts warmed eagerly and the time it took (None: none, or on the CPU)."""
        return self.forward.warmup

    def replay(self, path: str, on_step: Callable[[int], None] | None = None) -> PathRun:
        """Replay the whole trace through `path` ('sync' or 'overlap'); the result is also kept in `self.runs`."""
        if path not in PATHS:
            raise OptionError("path", f"expected sync or overlap, got '{path}'")
        self.forward.capture_all()  # once, before the first path (warm_up has usually done it)
        run = PathRun(path)
        self.runs.append(run)
        self.share.reset()
        self.book.reset()
        dev = self.device
        recorder = StepRecorder(dev, len(self.trace.steps) + 1, self.options.timestamps)
        overlap = path == "overlap"
        with open_output(self.output_ipc, self.trace, self.ops) if self.saves else contextlib.nullcontext() as out:
            sender = out.sender if out is not None else _NullSender()
            runner = self._runner(sender, recorder, self.options)
            try:
                if out is not None:
                    out.reader.start()  # in the try: an interrupt while it loads paddle must stop it too
                    out.reader.wait_ready()
                run.clock_start = dev.clock_samples(CLOCK_SAMPLES)
                with self.annotator.range(path, self.trace_id):
                    for k, step in enumerate(self.trace.steps):
                        runner.iteration(k, step, overlap)
                        if on_step is not None:
                            on_step(k)
                    runner.flush()
                dev.synchronize()
                run.clock_end = dev.clock_samples(CLOCK_SAMPLES)
                if out is not None:
                    run.reader = out.finish()
                run.complete = True
            finally:
                run.host = recorder.host_table()
                run.gpu = _safe(recorder.gpu_times)
                run.full_queue_waits = sender.full_waits
                run.messages_sent = sender.sent
                run.finished = {self.trace.requests[r].id: d for r, d in self.book.finished.items()}
        return run


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _safe(read: Callable[[], Any]) -> Any:
    """What an interrupted run can still read back; None if the device cannot answer."""
    try:
        return read()
    except Exception:
        return None
