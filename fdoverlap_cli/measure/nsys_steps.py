"""Nsight Systems activity attributed to fdoverlap's paths, steps and stages, as the `Span`s the metrics read.

The engine brackets its work in NVTX push/pop ranges of the domain `fdoverlap` (engine/annotate.py):
`sync`/`overlap` around each measured path, `step` (payload k) around each loop iteration, and the
stage ranges insert_tasks, preprocess_and_execute_model, postprocess, save_model_output (payload =
the step the stage works on). A GPU record belongs to the innermost range open on the thread of the
API call that launched it (joined on correlationId). The definitions, the same as the engine's own
timing (results.py `_STEP_SPANS`):

  C_k        per stage, from the start of the first to the end of the last kernel launched inside
             preprocess_and_execute_model(k), and likewise postprocess(k): two Kind.COMPUTE intervals
             on the stream's track. That is what the engine's timestamps at the stage boundaries
             measure, so both sources agree; the idle time between kernels inside a stage (a host
             that launches slower than the GPU runs) only nsys sees: `kernel_busy_ns` sums the
             union of the kernels themselves. Kernels named *timestamp*, *clock* or *pingpong* are
             the engine's own instrumentation (record_timestamp, clock_samples): counted apart,
             never in C_k.
  D_k        device-to-host copies launched inside postprocess(k), first start to last end: Kind.COPY.
  S_k        the save_model_output range with payload k: Kind.SAVE.
  iteration  the `step` range with payload k, when the step ran (it holds a preprocess range): Kind.ITERATION.
  waits      API calls that block the host: the synchronize calls, synchronous copies, and any
             device-to-host copy into pageable memory (CUDA completes those before returning, so the
             token-count read-back in preprocess is a wait, not D_k): Kind.WAIT, with the step of the
             enclosing iteration. cudaStreamWaitEvent makes the GPU wait, not the host: not a wait.
  insert, preprocess, postprocess  their ranges: Kind.INSERT, PREPROCESS, POSTPROCESS. GPU work
             launched inside insert_tasks is insert work (counted, in no C_k).

One pass over the API calls in time order, advancing through the NVTX ranges alongside: the state is
one stack of open ranges per thread, the last interval of each (kind, step, stream) still growing
(touching or overlapping intervals are merged as they arrive), and the span columns.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from fdoverlap_cli.measure import nsys
from fdoverlap_cli.measure.records import KIND_CODE, Kind, Span, SpanTable, Track

DOMAIN = "fdoverlap"
PATH_RANGES = ("sync", "overlap")
STEP = "step"
INSERT = "insert_tasks"
PREPROCESS = "preprocess_and_execute_model"
POSTPROCESS = "postprocess"
SAVE = "save_model_output"
STAGE_KINDS = {INSERT: Kind.INSERT, PREPROCESS: Kind.PREPROCESS, POSTPROCESS: Kind.POSTPROCESS, SAVE: Kind.SAVE}
COMPUTE_STAGES = (PREPROCESS, POSTPROCESS)

# Host-blocking API calls (names without nsys's _vNNNN / _ptsz suffixes).
SYNCHRONIZE_CALLS = frozenset(
    {
        "cudaEventSynchronize",
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaThreadSynchronize",
        "cuEventSynchronize",
        "cuStreamSynchronize",
        "cuCtxSynchronize",
    }
)
# record_timestamp's kernel (RecordTimestampKernel) and clock_samples' (PingPongKernel), by lower-case name part.
INSTRUMENTATION_MARKERS = ("timestamp", "clock", "pingpong")
_SUFFIX = re.compile(r"(?:_ptsz|_ptds)?(?:_v\d+)?$")

_COMPUTE, _COPY, _WAIT, _ITERATION = (KIND_CODE[k] for k in (Kind.COMPUTE, Kind.COPY, Kind.WAIT, Kind.ITERATION))


def api_name(name: str) -> str:
    """An API function's name as nsys records it, without the version and per-thread-stream suffixes."""
    return _SUFFIX.sub("", name)


def is_host_wait_call(name: str) -> bool:
    """Whether the API call `name` blocks the host until the GPU catches up (synchronize, synchronous copy)."""
    base = api_name(name)
    return base in SYNCHRONIZE_CALLS or (base.startswith(("cudaMemcpy", "cuMemcpy")) and "Async" not in base)


def is_instrumentation_kernel(name: str) -> bool:
    """The engine's timing kernels (record_timestamp, clock_samples' ping-pong): not model compute."""
    lowered = name.lower()
    return any(marker in lowered for marker in INSTRUMENTATION_MARKERS)


@dataclass
class GpuWork:
    """Count and summed duration of GPU records (kernels or copies)."""

    count: int = 0
    total_ns: int = 0

    def add(self, start: int, end: int) -> None:
        self.count += 1
        self.total_ns += end - start

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "total_ns": self.total_ns}


@dataclass
class PathAttribution:
    """One path's spans, and what of its GPU work went where."""

    name: str
    spans: SpanTable
    flows: list[tuple[Span, Span]]  # (launch call, GPU record), when asked for
    compute_kernels: GpuWork  # in C_k
    dtoh_copies: GpuWork  # in D_k
    waits: GpuWork  # host-blocking calls (host time)
    instrumentation: GpuWork  # the engine's timing kernels, in no C_k
    insert_work: GpuWork  # kernels and copies launched inside insert_tasks
    other_work: GpuWork  # GPU records launched elsewhere in the path (e.g. the token-count read-back)
    idle_iterations: int  # step ranges without a preprocess range (the worker idled)
    kernel_busy_ns: int = 0  # |union of the C_k kernels|: C_k without the idle gaps inside its stages

    def counts(self) -> dict[str, dict[str, int] | int]:
        return {
            "compute_kernels": self.compute_kernels.to_dict(),
            "dtoh_copies": self.dtoh_copies.to_dict(),
            "waits": self.waits.to_dict(),
            "instrumentation_kernels": self.instrumentation.to_dict(),
            "insert_work": self.insert_work.to_dict(),
            "other_gpu_work": self.other_work.to_dict(),
            "idle_iterations": self.idle_iterations,
            "kernel_busy_ns": self.kernel_busy_ns,
        }


@dataclass
class Attribution:
    """Everything the attribution found: the paths, and the reasons there may be none."""

    paths: dict[str, PathAttribution]
    has_domain: bool  # the export has the `fdoverlap` NVTX domain
    step_ranges: int  # `step` ranges anywhere
    stage_ranges: int  # preprocess_and_execute_model and postprocess ranges anywhere
    steps_outside_paths: int  # `step` ranges outside any path range (warm-up)
    gpu_outside_paths: int  # GPU records launched outside any path range

    def unavailable_reason(self, has_cuda: bool) -> str | None:
        """Why per-step metrics cannot be computed, or None when at least one path has them."""
        if not self.has_domain:
            return f"no `{DOMAIN}` NVTX domain in the export: not a run of the fdoverlap engine"
        if self.stage_ranges == 0:
            return (
                f"the `{DOMAIN}` domain has no {PREPROCESS}/{POSTPROCESS} ranges, so GPU work cannot be "
                "attributed to steps: not a run of the fdoverlap engine"
            )
        if not self.paths:
            return f"no `sync`/`overlap` path ranges in the `{DOMAIN}` domain: only warm-up steps were captured"
        if not has_cuda:
            return "no CUDA trace in the export (profile with -t cuda,nvtx): no GPU work to attribute to steps"
        if not any(p.compute_kernels.count for p in self.paths.values()):
            return "no kernels were launched inside the stage ranges"
        return None


@dataclass(slots=True)
class _Open:
    """An open range on a thread, and what it says about the calls inside it."""

    end: int | None  # None: never closed
    path: _PathBuilder | None
    step: int | None  # payload of the enclosing `step` range
    stage: str | None  # the innermost stage range's name
    stage_step: int | None  # its payload (the enclosing step's when it has none)


class _Columns:
    """Span columns growing row by row (compact: 27 bytes a span)."""

    def __init__(self) -> None:
        self.kind, self.step, self.start, self.end, self.track = (
            array("b"),
            array("q"),
            array("q"),
            array("q"),
            array("h"),
        )

    def add(self, kind: int, step: int, start: int, end: int, track: int) -> None:
        self.kind.append(kind)
        self.step.append(step)
        self.start.append(start)
        self.end.append(end)
        self.track.append(track)

    def table(self, track_names: tuple[str, ...]) -> SpanTable:
        return SpanTable(
            np.frombuffer(self.kind, np.int8).copy(),
            np.frombuffer(self.step, np.int64).copy(),
            np.frombuffer(self.start, np.int64).copy(),
            np.frombuffer(self.end, np.int64).copy(),
            np.frombuffer(self.track, np.int16).copy(),
            track_names,
        )


@dataclass
class _PathBuilder:
    name: str
    columns: _Columns = field(default_factory=_Columns)
    growing: dict[tuple[int, int, int, str], list[int]] = field(default_factory=dict)  # (kind, step, track, stage)
    kernel_busy_ns: int = 0  # |union of the C_k kernels themselves|, summed as they arrive
    _busy: list[int] | None = None  # the union's interval still growing
    newest_step: int = -(2**62)
    iteration: tuple[int, int, int, int] | None = None  # (step, start, end, track) until we know the step ran
    iteration_ran: bool = False
    flows: list[tuple] = field(default_factory=list)
    work: dict[str, GpuWork] = field(default_factory=dict)
    idle_iterations: int = 0

    def count(self, what: str, start: int, end: int) -> None:
        self.work.setdefault(what, GpuWork()).add(start, end)

    def gpu(self, kind: int, step: int, start: int, end: int, track: int, stage: str) -> None:
        """Extend the (kind, step, track, stage) interval to cover a GPU record: first start to last end."""
        key = (kind, step, track, stage)
        current = self.growing.get(key)
        if current is not None:
            current[0], current[1] = min(current[0], start), max(current[1], end)
        else:
            self.growing[key] = [start, end]
        if kind == _COMPUTE:
            self._add_busy(start, end)
        if step > self.newest_step:
            self.newest_step = step
            self._settle(older_than=step - 1)

    def _add_busy(self, start: int, end: int) -> None:
        # Kernels of one stream run in launch order, so the union grows at its end or starts anew.
        if self._busy is not None and start <= self._busy[1]:
            self._busy[1] = max(self._busy[1], end)
            return
        if self._busy is not None:
            self.kernel_busy_ns += self._busy[1] - self._busy[0]
        self._busy = [start, end]

    def _settle(self, older_than: int) -> None:
        """Emit the growing intervals of steps before `older_than`: no more work of theirs is coming in order."""
        for key in [key for key in self.growing if key[1] < older_than]:
            s, e = self.growing.pop(key)
            self.columns.add(key[0], key[1], s, e, key[2])  # key: (kind, step, track, stage)

    def begin_iteration(self, step: int, start: int, end: int, track: int) -> None:
        self.end_iteration()
        self.iteration, self.iteration_ran = (step, start, end, track), False

    def end_iteration(self) -> None:
        if self.iteration is not None:
            step, start, end, track = self.iteration
            if self.iteration_ran:
                self.columns.add(_ITERATION, step, start, end, track)
            else:
                self.idle_iterations += 1
        self.iteration = None

    def finish(self) -> None:
        self.end_iteration()
        self._settle(older_than=2**62)
        if self._busy is not None:
            self.kernel_busy_ns += self._busy[1] - self._busy[0]
            self._busy = None


class _Tracks:
    """Track codes for host threads and GPU streams; named once every span is known."""

    def __init__(self) -> None:
        self.code: dict[tuple[str, int], int] = {}

    def __call__(self, what: str, ident: int) -> int:
        return self.code.setdefault((what, ident), len(self.code))

    def names(self, paths: Iterable[_PathBuilder]) -> tuple[str, ...]:
        """Host: the thread of the path ranges; gpu:compute: the stream running the most C_k; gpu:copy: a
        stream with D_k and no C_k; other threads and streams by their ids."""
        compute: dict[int, int] = {}
        copies: dict[int, int] = {}
        for p in paths:
            kinds, tracks = np.frombuffer(p.columns.kind, np.int8), np.frombuffer(p.columns.track, np.int16)
            for code, n in zip(*np.unique(tracks[kinds == _COMPUTE], return_counts=True), strict=True):
                compute[int(code)] = compute.get(int(code), 0) + int(n)
            for code, n in zip(*np.unique(tracks[kinds == _COPY], return_counts=True), strict=True):
                copies[int(code)] = copies.get(int(code), 0) + int(n)
        compute_stream = max(compute, key=compute.__getitem__, default=None)
        copy_only = {c: n for c, n in copies.items() if c not in compute}
        copy_stream = max(copy_only, key=copy_only.__getitem__, default=None)
        names = [""] * len(self.code)
        host_named = False
        for (what, ident), code in self.code.items():
            if what == "thread":
                names[code] = f"host:{ident & ((1 << nsys.TID_BITS) - 1)}" if host_named else Track.HOST
                host_named = True
            elif code == compute_stream:
                names[code] = Track.COMPUTE_STREAM
            elif code == copy_stream:
                names[code] = Track.COPY_STREAM
            else:
                names[code] = f"gpu:stream {ident}"
        return tuple(names)


class StepAttributor:
    """Feeds the export's ranges and API calls through the rules above; `run()` returns the Attribution."""

    def __init__(self, export: nsys.NsysExport, *, keep_flows: bool = False) -> None:
        self.export = export
        self.keep_flows = keep_flows
        domains = export.domains()
        self.domain_ids = frozenset(i for i, name in domains.items() if name == DOMAIN)
        self.categories = export.categories()
        calls = export.distinct_names(nsys.RUNTIME, "nameId")
        self.wait_ids = frozenset(i for i, name in calls.items() if is_host_wait_call(name))
        kernels = export.distinct_names(nsys.KERNEL, "shortName")
        self.instrumentation_ids = frozenset(i for i, name in kernels.items() if is_instrumentation_kernel(name))
        copy_kinds, memory_kinds = export.enum(nsys.MEMCPY_KINDS), export.enum(nsys.MEMORY_KINDS)
        self.dtoh = frozenset(i for i, name in copy_kinds.items() if name.endswith("_DTOH"))
        self.pageable = frozenset(i for i, name in memory_kinds.items() if name.endswith("_PAGEABLE"))
        self.tracks = _Tracks()
        self.stacks: dict[int, list[_Open]] = {}
        self.paths: dict[str, _PathBuilder] = {}
        self.step_ranges = self.stage_ranges = self.steps_outside_paths = self.gpu_outside_paths = 0
        self._last_wait: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ ranges

    def _open_on(self, tid: int, t: int) -> list[_Open]:
        """The thread's stack with every range that ended at or before `t` popped."""
        stack = self.stacks.setdefault(tid, [])
        while stack and stack[-1].end is not None and stack[-1].end <= t:
            stack.pop()
        return stack

    def _new_path(self, name: str) -> _PathBuilder:
        key, n = name, 1
        while key in self.paths:
            n += 1
            key = f"{name}#{n}"
        self.paths[key] = _PathBuilder(key)
        return self.paths[key]

    def enter(self, r: nsys.NvtxRange) -> None:
        """A push/pop range of the fdoverlap domain starts: push it, and emit its host span."""
        if not r.push_pop or r.domain not in self.domain_ids:
            return
        stack = self._open_on(r.tid, r.start)
        parent = stack[-1] if stack else _Open(None, None, None, None, None)
        name = r.name if r.name is not None else self.categories.get((r.domain, r.category))
        opened = _Open(r.end, parent.path, parent.step, parent.stage, parent.stage_step)
        if name in PATH_RANGES:
            opened = _Open(r.end, self._new_path(name), None, None, None)
        elif name == STEP:
            self.step_ranges += 1
            opened.step = r.payload
            opened.stage = opened.stage_step = None
            if opened.path is None:
                self.steps_outside_paths += 1
            elif r.payload is not None and r.end is not None:
                opened.path.begin_iteration(r.payload, r.start, r.end, self.tracks("thread", r.tid))
        elif name in STAGE_KINDS:
            self.stage_ranges += name in COMPUTE_STAGES
            opened.stage = name
            opened.stage_step = r.payload if r.payload is not None else parent.step
            path, step = opened.path, opened.stage_step
            if path is not None and step is not None and r.end is not None:
                if name == PREPROCESS and path.iteration is not None and path.iteration[0] == parent.step:
                    path.iteration_ran = True
                path.columns.add(KIND_CODE[STAGE_KINDS[name]], step, r.start, r.end, self.tracks("thread", r.tid))
        stack.append(opened)

    # ------------------------------------------------------------------ API calls and their GPU records

    def launch(self, c: nsys.Launch) -> None:
        """An API call: a host wait, and/or the launch of a kernel or copy, attributed by the open ranges."""
        stack = self._open_on(c.tid, c.start) if c.tid in self.stacks else None
        ctx = stack[-1] if stack else None
        path = ctx.path if ctx is not None else None
        if path is None:
            self.gpu_outside_paths += c.gpu is not None
            return
        step = ctx.step if ctx.step is not None else ctx.stage_step
        blocking = c.name_id in self.wait_ids or (
            c.gpu == nsys.MEMCPY and c.copy_kind in self.dtoh and c.dst_kind in self.pageable
        )
        if blocking and step is not None and self._last_wait != (c.tid, c.start, c.end):
            self._last_wait = (c.tid, c.start, c.end)
            path.columns.add(_WAIT, step, c.start, c.end, self.tracks("thread", c.tid))
            path.count("waits", c.start, c.end)
        if c.gpu is None:
            return
        s, e, stage, k = c.gpu_start, c.gpu_end, ctx.stage, ctx.stage_step
        if c.gpu == nsys.KERNEL and c.kernel_name_id in self.instrumentation_ids:
            path.count("instrumentation", s, e)
        elif stage == INSERT:
            path.count("insert", s, e)
        elif c.gpu == nsys.KERNEL and stage in COMPUTE_STAGES and k is not None:
            path.count("compute", s, e)
            self._gpu(path, c, _COMPUTE, k, stage)
        elif c.gpu == nsys.MEMCPY and stage == POSTPROCESS and c.copy_kind in self.dtoh and k is not None:
            path.count("dtoh", s, e)
            self._gpu(path, c, _COPY, k, stage)
        else:
            path.count("other", s, e)

    def _gpu(self, path: _PathBuilder, c: nsys.Launch, kind: int, step: int, ctx_stage: str) -> None:
        stream = self.tracks("stream", c.stream)
        path.gpu(kind, step, c.gpu_start, c.gpu_end, stream, ctx_stage)
        if self.keep_flows:
            path.flows.append(
                (step, c.start, c.end, self.tracks("thread", c.tid), kind, c.gpu_start, c.gpu_end, stream)
            )

    # ------------------------------------------------------------------ the pass

    def run(self) -> Attribution:
        ranges: Iterator[nsys.NvtxRange] = iter(self.export.nvtx_ranges())
        pending = next(ranges, None)
        for call in self.export.launches(self.wait_ids):
            while pending is not None and pending.start <= call.start:
                self.enter(pending)
                pending = next(ranges, None)
            self.launch(call)
        while pending is not None:
            self.enter(pending)
            pending = next(ranges, None)
        return self._result()

    def _result(self) -> Attribution:
        for p in self.paths.values():
            p.finish()
        names = self.tracks.names(self.paths.values())
        paths = {}
        for key, p in self.paths.items():
            if not len(p.columns.step):
                continue
            w = p.work
            paths[key] = PathAttribution(
                name=key,
                spans=p.columns.table(names),
                flows=[_flow(f, names) for f in p.flows],
                compute_kernels=w.get("compute", GpuWork()),
                dtoh_copies=w.get("dtoh", GpuWork()),
                waits=w.get("waits", GpuWork()),
                instrumentation=w.get("instrumentation", GpuWork()),
                insert_work=w.get("insert", GpuWork()),
                other_work=w.get("other", GpuWork()),
                idle_iterations=p.idle_iterations,
                kernel_busy_ns=p.kernel_busy_ns,
            )
        return Attribution(
            paths=paths,
            has_domain=bool(self.domain_ids),
            step_ranges=self.step_ranges,
            stage_ranges=self.stage_ranges,
            steps_outside_paths=self.steps_outside_paths,
            gpu_outside_paths=self.gpu_outside_paths,
        )


def _flow(f: tuple, names: tuple[str, ...]) -> tuple[Span, Span]:
    step, call_start, call_end, thread, kind, gpu_start, gpu_end, stream = f
    return (
        Span(Kind.ALL[kind], step, call_start, call_end, names[thread]),
        Span(Kind.ALL[kind], step, gpu_start, gpu_end, names[stream]),
    )


def attribute(export: nsys.NsysExport, *, keep_flows: bool = False) -> Attribution:
    """The export's fdoverlap paths as Spans (flows from each launch to its GPU record when `keep_flows`)."""
    return StepAttributor(export, keep_flows=keep_flows).run()
