"""One model of the runner's loop, with two outputs: its `Span`s, and the Nsight Systems rows of the same run.

A discrete-event model: one host thread, one compute stream (and a copy stream when asked). A kernel
or copy starts when its launch call is half done and its stream is free; a save waits for its
step's copies. The step order is the runner's:

- sync     iteration k: insert, preprocess(k) (launches the forward), postprocess(k) (launches the
           postprocess kernels and the DtoH copies), save(k) (waits for the copies, sends).
- overlap  iteration k: insert, preprocess(k), save(k-1), postprocess(k); the last step's save after
           the loop.

`spans(path, steps, costs)` returns what the definitions of docs/architecture.md make of the run.
`write_export(file, steps, costs)` writes the same runs of both paths as an export (NVTX ranges of the
names in measure/schema.py, API calls, kernels, copies; warm-up steps before them, another thread's
kernels and another domain's range beside them) and returns each path's spans: what the nsys reader
must find. `write_results(spans, file)` writes the tool's own run.json of those spans (the engine's
step table): what `analyze --against` compares with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fdoverlap_cli.measure import schema
from fdoverlap_cli.measure.records import Kind, Span, Track
from fdoverlap_cli.results import PathRecord, RunResult
from tests.nsys_export_writer import DEVICE, DTOH, HTOD, PAGEABLE, PID, PINNED, ExportWriter

COMPUTE_STREAM, COPY_STREAM = 7, 8
NOISE_TID = PID + 1  # another thread launching kernels outside any range: attributed to no step
TIMESTAMP_KERNEL = "RecordTimestampKernel"
assert TIMESTAMP_KERNEL in schema.TIMING_KERNELS
DURATIONS = ("insert", "preprocess", "forward", "postprocess", "postprocess_gpu", "copy", "save")


@dataclass(frozen=True)
class StepCosts:
    """What one step costs, in ns; a sequence for a duration gives one value per step."""

    insert: int | list[int] = 10_000  # host work of insert_tasks before its launches
    preprocess: int | list[int] = 60_000  # host work of stage 1 before its launches
    forward: int | list[int] = 400_000  # GPU: the forward pass, in `forward_kernels` equal kernels
    postprocess: int | list[int] = 50_000  # host work of stage 2 before its launches
    postprocess_gpu: int | list[int] = 40_000  # GPU: sampling and the step ops, in `post_kernels` kernels
    copy: int | list[int] = 5_000  # GPU: each of the step's `copies` DtoH copies
    save: int | list[int] = 30_000  # host: build and send the message once the copies landed
    forward_kernels: int = 1
    post_kernels: int = 1
    copies: int = 1
    launch_ns: int = 0  # host cost of one launch call
    sync_ns: int = 0  # host cost of a synchronize call past the GPU work it waits for
    loop_ns: int = 0  # host time of an iteration after its stages
    insert_every: int = 1  # steps with inserts: k % insert_every == 0 (an upload and a kernel when insert_gpu)
    insert_gpu: int = 0  # GPU: the insert kernel
    readback_every: int = 0  # steps whose preprocess reads the token count back (a pageable copy); 0: none
    timestamps: bool = False  # the engine's timing kernels (instrumentation, not compute), two a step
    copy_stream: bool = False  # the copies on their own stream, after postprocess

    def per_step(self, steps: int) -> dict[str, list[int]]:
        """Each duration as a list of `steps` ints."""
        return {
            name: np.broadcast_to(np.asarray(getattr(self, name), dtype=np.int64), (steps,)).tolist()
            for name in DURATIONS
        }


def costs_strategy(steps: tuple[int, int], most_ns: int, **fixed: object):
    """A hypothesis strategy of (n, StepCosts) with n in `steps` and every duration of DURATIONS a list of n in
    0..most_ns; `fixed` gives the other StepCosts fields (values or strategies)."""
    from hypothesis import strategies as st

    other = {name: v if isinstance(v, st.SearchStrategy) else st.just(v) for name, v in fixed.items()}
    return st.integers(*steps).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.builds(
                StepCosts,
                **{name: st.lists(st.integers(0, most_ns), min_size=n, max_size=n) for name in DURATIONS},
                **other,
            ),
        )
    )


# What an engine step looks like under nsys: several kernels a stage, launch costs, two copies, uploads.
ENGINE = StepCosts(
    insert=10_000,
    preprocess=10_000,
    forward=6 * 40_000,
    postprocess=10_000,
    postprocess_gpu=3 * 8_000,
    copy=3_000,
    save=40_000,
    forward_kernels=6,
    post_kernels=3,
    copies=2,
    launch_ns=4_000,
    sync_ns=500,
    loop_ns=2_000,
    insert_every=3,
    insert_gpu=2_000,
    readback_every=2,
    timestamps=True,
)
assert {f.name for f in fields(StepCosts)} >= set(DURATIONS)


class _Loop:
    """The host clock, the streams, the spans so far; with a writer, the export rows too."""

    def __init__(self, costs: StepCosts, steps: int, start_ns: int, w: ExportWriter | None, domain: int = 0):
        self.costs, self.d = costs, costs.per_step(steps)
        self.w, self.domain, self.registered = w, domain, True
        self.host = start_ns
        self.free = {COMPUTE_STREAM: start_ns, COPY_STREAM: start_ns}
        self.copy_end: dict[int, int] = {}
        self.spans: list[Span] = []
        self._envelope: dict[str, list[int]] = {}  # kind -> [first start, last end] of the stage's GPU work

    # ------------------------------------------------------------------ what nsys records

    def _call(self, name: str, until: int | None = None) -> int:
        """An API call from now to `until` (default: launch_ns later); its correlation id (0 without rows)."""
        start = self.host
        self.host = start + self.costs.launch_ns if until is None else until
        return self.w.call(start, self.host, name) if self.w else 0

    def _range(self, start: int, name: str, payload: int | None = None) -> None:
        if self.w:
            self.w.nvtx_range(start, self.host, name, domain=self.domain, payload=payload, registered=self.registered)

    def _on(self, stream: int, ready: int, duration: int) -> tuple[int, int]:
        start = max(ready, self.free[stream])
        self.free[stream] = start + duration
        return start, start + duration

    def kernel(self, name: str, duration: int, kind: str | None = Kind.COMPUTE) -> int:
        """A launch and its kernel on the compute stream; `kind` None: not part of C_k. Returns its end."""
        ready = self.host + self.costs.launch_ns // 2
        corr = self._call("cudaLaunchKernel_v7000")
        start, end = self._on(COMPUTE_STREAM, ready, duration)
        if self.w:
            self.w.kernel(start, end, name, stream=COMPUTE_STREAM, correlation_id=corr)
        if kind is not None:
            self._extend(kind, start, end)
        return end

    def memcpy(self, stream: int, ready: int, duration: int, kind: int, src: int, dst: int, sync: str | None = None):
        """A copy; `sync` (a wait kind): a synchronous copy, the host waits for it."""
        corr_start = self.host
        start, end = self._on(stream, ready, duration)
        corr = self._call(
            "cudaMemcpy_v3020" if sync else "cudaMemcpyAsync_v3020", end + self.costs.sync_ns if sync else None
        )
        if self.w:
            self.w.memcpy(start, end, stream=stream, correlation_id=corr, kind=kind, src=src, dst=dst, nbytes=64)
        if sync:
            self.spans.append(Span(sync, self.iteration_step, corr_start, self.host, Track.HOST))
        return start, end

    def _extend(self, kind: str, start: int, end: int) -> None:
        """C_k and D_k are per stage: from the first record's start to the last one's end."""
        current = self._envelope.setdefault(kind, [start, end])
        current[0], current[1] = min(current[0], start), max(current[1], end)

    def _stage_gpu_spans(self, step: int) -> None:
        for kind, (start, end) in self._envelope.items():
            track = Track.COPY_STREAM if kind == Kind.COPY and self.costs.copy_stream else Track.COMPUTE_STREAM
            self.spans.append(Span(kind, step, start, end, track))
        self._envelope.clear()

    def host_stage(self, kind: str, step: int, start: int, name: str) -> None:
        self._range(start, name, step)
        self.spans.append(Span(kind, step, start, self.host, Track.HOST))

    # ------------------------------------------------------------------ the stages

    def insert(self, k: int) -> None:
        start = self.host
        self.host += self.d["insert"][k]  # the host's own work, then its launches
        if self.costs.insert_gpu:
            self.memcpy(COMPUTE_STREAM, self.host + self.costs.launch_ns // 2, 1_000, HTOD, PAGEABLE, DEVICE)
            self.kernel("InsertTaskKernel", self.costs.insert_gpu, kind=None)
        self.host_stage(Kind.INSERT, k, start, schema.INSERT_TASKS)

    def preprocess(self, k: int) -> None:
        start = self.host
        self.host += self.d["preprocess"][k]
        every = self.costs.readback_every
        if every and k % every == 0:  # the token count read back: a synchronous pageable copy, a wait (not D_k)
            self.memcpy(COMPUTE_STREAM, self.host + 1_000, 3_000, DTOH, DEVICE, PAGEABLE, sync=Kind.READBACK)
        if self.costs.timestamps:  # the stage-start timestamp: where the engine's C_k begins (not a kernel of it)
            self.kernel(TIMESTAMP_KERNEL, 1_000, kind=Kind.COMPUTE)
        n = self.costs.forward_kernels
        for i in range(n):
            self.kernel(f"forward_kernel_{i % 3}", self.d["forward"][k] // n)
        self._stage_gpu_spans(k)
        self.host_stage(Kind.PREPROCESS, k, start, schema.PREPROCESS)

    def postprocess(self, k: int) -> None:
        start = self.host
        self.host += self.d["postprocess"][k]
        n = self.costs.post_kernels
        done = self.free[COMPUTE_STREAM]
        for i in range(n):
            done = self.kernel(f"postprocess_kernel_{i}", self.d["postprocess_gpu"][k] // n)
        stream = COPY_STREAM if self.costs.copy_stream else COMPUTE_STREAM
        for _ in range(self.costs.copies):
            ready = max(done, self.host + self.costs.launch_ns // 2)
            copy_start, end = self.memcpy(stream, ready, self.d["copy"][k], DTOH, DEVICE, PINNED)
            self._extend(Kind.COPY, copy_start, end)
            self.copy_end[k] = end
        if self.w:  # an API call with no GPU record
            self._call("cudaEventRecord_v3020", self.host + 1_000)
        if self.costs.timestamps:
            self.kernel(TIMESTAMP_KERNEL, 1_000, kind=None)
        self._stage_gpu_spans(k)
        self.host_stage(Kind.POSTPROCESS, k, start, schema.POSTPROCESS)

    def save(self, j: int) -> None:
        start = self.host
        until = max(self.copy_end[j], start) + self.costs.sync_ns
        self._call("cudaEventSynchronize_v3020", until)
        if until > start:
            self.spans.append(Span(Kind.EVENT_WAIT, self.iteration_step, start, until, Track.HOST))
        self.host += self.d["save"][j]
        self.host_stage(Kind.SAVE, j, start, schema.SAVE)

    def iteration(self, k: int, path: str) -> None:
        start, self.iteration_step = self.host, k
        if k % self.costs.insert_every == 0:
            self.insert(k)
        self.preprocess(k)
        if path == "overlap" and k > 0:
            self.save(k - 1)
        self.postprocess(k)
        if path == "sync":
            self.save(k)
        self.host += self.costs.loop_ns
        self._range(start, schema.STEP, k)
        self.spans.append(Span(Kind.ITERATION, k, start, self.host, Track.HOST))

    def run(self, path: str, steps: int) -> list[Span]:
        self.spans = []
        for k in range(steps):
            self.iteration(k, path)
        if path == "overlap" and steps:
            self.save(steps - 1)
        return self.spans


def spans(path: str, steps: int, costs: StepCosts | None = None, *, start_ns: int = 0) -> list[Span]:
    """The spans of `steps` steps (numbered 0..steps-1) of `path` ("sync" or "overlap")."""
    if path not in schema.PATHS:
        raise ValueError(f"path must be one of {schema.PATHS}, got {path!r}")
    return _Loop(costs or StepCosts(), steps, start_ns, None).run(path, steps)


def write_export(
    file: str | Path,
    steps: int = 6,
    costs: StepCosts = ENGINE,
    *,
    paths: tuple[str, ...] = schema.PATHS,
    warmup_steps: int = 2,
    trace_sha256: str | None = None,
    schema_from: str | Path | None = None,
    version: str = "3.20.3",
    processes: tuple[int, ...] = (PID,),
) -> dict[str, list[Span]]:
    """Write an export of `steps` steps of each path to `file`; return each path's spans.

    With several `processes` (the ranks of a tensor-parallel run in one export) each runs the same loop over
    the same time, its threads its own, and the spans are returned per process: `sync@pid{pid}`.

    Warm-up steps run before the `measure` range (attributed to no path); the sync path's messages
    are registered strings, the overlap path's plain text; another thread launches kernels outside
    any range; `trace_sha256` is the trace's id in the path ranges' payload.
    """
    w = ExportWriter(file, schema_from=schema_from, version=version)
    expected: dict[str, list[Span]] = {}
    for pid in processes:
        w.process(pid)
        own = _write_process(w, steps, costs, paths, warmup_steps, trace_sha256)
        expected.update(own if len(processes) == 1 else {f"{p}@pid{pid}": s for p, s in own.items()})
    w.close()
    return expected


def _write_process(
    w: ExportWriter,
    steps: int,
    costs: StepCosts,
    paths: tuple[str, ...],
    warmup_steps: int,
    trace_sha256: str | None,
) -> dict[str, list[Span]]:
    """One process's rows of write_export (its domain and categories, warm-up, paths, measure range)."""
    domain = w.domain(schema.DOMAIN)
    for category, name in enumerate(schema.RANGES, 1):
        w.category(domain, category, name)
    other = w.domain("other_library")
    loop = _Loop(costs, max(steps, warmup_steps), 1_000_000_000, w, domain)
    for k in range(warmup_steps):
        loop.iteration(k, "sync")
    measure_start = loop.host
    payload = schema.trace_payload(trace_sha256) if trace_sha256 else None
    expected: dict[str, list[Span]] = {}
    for p in paths:
        loop.registered = p == "sync"
        path_start = loop.host
        loop.spans = []
        for k in range(steps):
            loop.iteration(k, p)
            if k == 0:
                w.nvtx_range(path_start, loop.host, "library_range", domain=other)
        if p == "overlap" and steps:
            loop.save(steps - 1)
        loop.host += 5_000
        w.nvtx_range(path_start, loop.host, p, domain=domain, registered=loop.registered, payload=payload)
        expected[p] = loop.spans
        noise = w.call(loop.host, loop.host + 3_000, "cudaLaunchKernel_v7000", tid=NOISE_TID)
        w.kernel(
            loop.host + 1_000, loop.host + 9_000, "other_thread_kernel", stream=COMPUTE_STREAM + 5, correlation_id=noise
        )
        loop.host += 50_000
    w.nvtx_range(measure_start, loop.host, schema.MEASURE, domain=domain)
    return expected


# --------------------------------------------------------------------------- the tool's own record of the same run


def step_table(path_spans: list[Span], save_shift_ns: int = 0) -> dict[str, np.ndarray]:
    """The engine's step table of these spans (schema.STEP_SPANS read backwards): host stage bounds, and
    GPU timestamps at the stage boundaries; a step's two compute spans are its forward and its postprocess."""
    steps = sorted({s.step for s in path_spans if s.kind == Kind.ITERATION})
    row = {k: i for i, k in enumerate(steps)}
    cols = {name: np.full(len(steps), -1, np.int64) for _, a, b, _ in schema.STEP_SPANS for name in (a, b)}
    columns_of: dict[str, list[tuple[str, str]]] = {}
    for kind, a, b, _ in schema.STEP_SPANS:
        columns_of.setdefault(kind, []).append((a, b))
    seen: dict[tuple[str, int], int] = {}
    for s in sorted(path_spans, key=lambda s: s.start_ns):
        if s.kind not in columns_of or s.step not in row:
            continue
        i, n = row[s.step], seen.get((s.kind, s.step), 0)
        seen[(s.kind, s.step)] = n + 1
        a, b = columns_of[s.kind][n]
        shift = save_shift_ns if s.kind == Kind.SAVE else 0
        cols[a][i], cols[b][i] = s.start_ns + shift, s.end_ns + shift
    waits = [s for s in path_spans if s.kind in Kind.WAITS]
    cols["step"] = np.array(steps, np.int64)
    cols["tokens"] = np.ones(len(steps), np.int64)
    cols["generated"] = np.ones(len(steps), np.int64)
    rows = [(s.step, s.start_ns, s.end_ns, schema.WAIT_KINDS.index(s.kind)) for s in waits]
    for j, name in enumerate(schema.WAIT_COLUMNS):
        cols[name] = np.array([row[j] for row in rows], np.int64)
    return cols


def write_results(
    expected: dict[str, list[Span]],
    file: Path,
    *,
    save_shift_ns: int = 0,
    trace_sha256: str = "0" * 64,
    device: str = "gpu",
) -> Path:
    """Write the tool's own results of a `write_export` run to `file` (saves shifted by `save_shift_ns`)."""
    paths = {
        name: PathRecord(name=name, complete=True, columns=step_table(spans, save_shift_ns))
        for name, spans in expected.items()
    }
    steps = max((len(p.columns["step"]) for p in paths.values()), default=0)
    RunResult(
        command=["fdoverlap", "compare"],
        environment={"device": device},
        trace={"file": "simulated", "sha256": trace_sha256, "requests": 0, "steps": steps},
        model={"name": "simulated", "num_layers": 0, "dtype": "float16"},
        options={},
        paths=paths,
    ).save(file)
    return file
