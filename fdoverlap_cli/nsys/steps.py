"""Nsight Systems activity attributed to fdoverlap's paths, steps and stages, as the `Span`s the metrics read.

The engine brackets its work in NVTX push/pop ranges of the domain `fdoverlap` (the names of
measure/schema.py): `sync`/`overlap` around each measured path (payload: the trace's id), `step`
(payload k) around each loop iteration, and the stage ranges insert_tasks, preprocess_and_execute_model,
postprocess, save_model_output (payload = the step the stage works on). A GPU record belongs to the
innermost range open on the thread of the API call that launched it (joined on correlationId). The
definitions, the same as the engine's own timing (schema.STEP_SPANS):

  C_k        per stage, from the start of the first to the end of the last kernel launched inside
             preprocess_and_execute_model(k), and likewise postprocess(k): two Kind.COMPUTE intervals
             on the stream's track. That is what the engine's timestamps at the stage boundaries
             measure, so both sources agree; the idle time between kernels inside a stage (a host
             that launches slower than the GPU runs) only nsys sees: `kernel_busy_ns` sums the
             union of the kernels themselves, `kernel_idle` the step, stage and call each gap of
             it ended at (nsys/kernel_idle.py). A CUDA graph's GPU work belongs to the stage whose
             cudaGraphLaunch launched it: its kernels when nsys traced it per node, its one
             whole-graph record (GRAPH_TRACE) when nsys traced it as a whole (then the gaps inside a
             graph count as busy, in C_k and in kernel_busy_ns alike). The kernels of
             schema.TIMING_KERNELS are the engine's own instrumentation (record_timestamp,
             clock_samples): counted apart, never a kernel of C_k; but a timing kernel launched in a
             compute stage before any of the stage's kernels is the engine's stage-start timestamp,
             where its own timing starts C_k, and it opens the stage's interval here too (so the
             bubble before C_{k+1} ends at the same point in both sources; the first op's launch
             after it shows in kernels-only busy).
  D_k        device-to-host copies launched inside postprocess(k), first start to last end: Kind.COPY.
  S_k        the save_model_output range with payload k: Kind.SAVE.
  iteration  the `step` range with payload k, when the step ran (it holds a preprocess range): Kind.ITERATION.
  waits      API calls that block the host: the synchronize calls, synchronous copies, and any
             device-to-host copy into pageable memory (CUDA completes those before returning, so the
             token-count read-back in preprocess is a wait, not D_k), with the step of the enclosing
             iteration; their kind by the innermost stage range (schema.STAGE_WAITS: Kind.READBACK in
             preprocess, Kind.EVENT_WAIT in save, Kind.WAIT elsewhere). cudaStreamWaitEvent makes
             the GPU wait, not the host: not a wait.
  insert, preprocess, postprocess  their ranges: Kind.INSERT, PREPROCESS, POSTPROCESS. GPU work
             launched inside insert_tasks is insert work (counted, in no C_k).

Several processes (the ranks of `--tp N` profiled together, or one export per rank merged): the ranges and
calls are attributed per thread as always, and each path is named by the process it ran in,
`sync@pid1234`, so every rank's steps are measured apart (one process: `sync`, `overlap` as before).

One pass over the API calls in time order, advancing through the NVTX ranges alongside: the state is
one stack of open ranges per thread, the last interval of each (kind, step, stream) still growing
(touching or overlapping intervals are merged as they arrive), and the span columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from fdoverlap_cli.measure.records import KIND_CODE, Kind, Span, SpanTable
from fdoverlap_cli.measure.schema import (
    COMPUTE_STAGES,
    DOMAIN,
    INSERT_TASKS,
    PATHS,
    POSTPROCESS,
    PREPROCESS,
    STAGE_KINDS,
    STAGE_WAITS,
    STEP,
)
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.calls import api_name, is_graph_launch_call, is_host_wait_call, is_timing_kernel
from fdoverlap_cli.nsys.kernel_idle import IdleLedger
from fdoverlap_cli.nsys.path_spans import COMPUTE, COPY, GpuWork, PathBuilder, Tracks

# The kind code of a host-blocking call inside each stage range (a Kind.WAIT elsewhere).
_WAIT = KIND_CODE[Kind.WAIT]
_STAGE_WAITS = {stage: KIND_CODE[kind] for stage, kind in STAGE_WAITS.items()}


@dataclass
class PathAttribution:
    """One path's spans, and what of its GPU work went where."""

    name: str
    spans: SpanTable
    flows: list[tuple[Span, Span]]  # (launch call, GPU record), when asked for
    compute_kernels: GpuWork  # in C_k
    graph_records: GpuWork  # whole-graph records in C_k (graphs nsys traced as a whole: their kernels are not)
    graph_launches: GpuWork  # cudaGraphLaunch calls inside the compute stages (total: their host time)
    dtoh_copies: GpuWork  # in D_k
    waits: GpuWork  # host-blocking calls (host time)
    instrumentation: GpuWork  # the engine's timing kernels, in no C_k
    insert_work: GpuWork  # kernels and copies launched inside insert_tasks
    other_work: GpuWork  # GPU records launched elsewhere in the path (e.g. the token-count read-back)
    idle_iterations: int  # step ranges without a preprocess range (the worker idled)
    kernel_busy_ns: int = 0  # |union of the C_k kernels|: C_k without the idle gaps inside its stages
    first_kernel_ns: dict[int, int] = field(default_factory=dict)  # step -> start of its first kernel of C_k
    kernel_idle: IdleLedger = field(default_factory=IdleLedger)  # where the union of the C_k kernels waited
    pid: int | None = None  # the process the path's ranges ran in

    def counts(self) -> dict[str, dict[str, int] | int]:
        return {
            "compute_kernels": self.compute_kernels.to_dict(),
            "graph_records": self.graph_records.to_dict(),
            "graph_launches": self.graph_launches.to_dict(),
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
    trace_ids: frozenset[int] = frozenset()  # the path ranges' payloads: schema.trace_payload of the trace

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
        if not any(p.compute_kernels.count or p.graph_records.count for p in self.paths.values()):
            return "no kernels were launched inside the stage ranges"
        return None


@dataclass(slots=True)
class _Open:
    """An open range on a thread, and what it says about the calls inside it."""

    end: int | None  # None: never closed
    path: PathBuilder | None
    step: int | None  # payload of the enclosing `step` range
    stage: str | None  # the innermost stage range's name
    stage_step: int | None  # its payload (the enclosing step's when it has none)


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
        self.graph_launch_ids = frozenset(i for i, name in calls.items() if is_graph_launch_call(name))
        self.call_names = {i: api_name(name) for i, name in calls.items()}
        kernels = export.distinct_names(nsys.KERNEL, "shortName")
        self.instrumentation_ids = frozenset(i for i, name in kernels.items() if is_timing_kernel(name))
        copy_kinds, memory_kinds = export.enum(nsys.MEMCPY_KINDS), export.enum(nsys.MEMORY_KINDS)
        self.dtoh = frozenset(i for i, name in copy_kinds.items() if name.endswith("_DTOH"))
        self.pageable = frozenset(i for i, name in memory_kinds.items() if name.endswith("_PAGEABLE"))
        self.tracks = Tracks()
        self.stacks: dict[int, list[_Open]] = {}
        self.paths: dict[str, PathBuilder] = {}
        self.origin: dict[str, tuple[str, int]] = {}  # path key -> (path name, process id)
        self.step_ranges = self.stage_ranges = self.steps_outside_paths = self.gpu_outside_paths = 0
        self._last_wait: tuple[int, int, int] | None = None
        self._last_graph_launch: tuple[int, int | None] | None = None
        self.trace_ids: set[int] = set()

    # ------------------------------------------------------------------ ranges

    def _open_on(self, tid: int, t: int) -> list[_Open]:
        """The thread's stack with every range that ended at or before `t` popped."""
        stack = self.stacks.setdefault(tid, [])
        while stack and stack[-1].end is not None and stack[-1].end <= t:
            stack.pop()
        return stack

    def _new_path(self, name: str, tid: int) -> PathBuilder:
        key, n = name, 1
        while key in self.paths:
            n += 1
            key = f"{name}#{n}"
        self.paths[key] = PathBuilder(key)
        self.origin[key] = (name, nsys.process_id(tid))
        return self.paths[key]

    def _keys(self) -> dict[str, str]:
        """Each path's name in the result: as found in one process; with several, by process (`sync@pid1234`)."""
        if len({pid for _, pid in self.origin.values()}) <= 1:
            return {key: key for key in self.paths}
        keys: dict[str, str] = {}
        for key, (name, pid) in self.origin.items():
            new, n = f"{name}@pid{pid}", 1
            while new in keys.values():
                n += 1
                new = f"{name}@pid{pid}#{n}"
            keys[key] = new
        return keys

    def enter(self, r: nsys.NvtxRange) -> None:
        """A push/pop range of the fdoverlap domain starts: push it, and emit its host span."""
        if not r.push_pop or r.domain not in self.domain_ids:
            return
        stack = self._open_on(r.tid, r.start)
        parent = stack[-1] if stack else _Open(None, None, None, None, None)
        name = r.name if r.name is not None else self.categories.get((r.domain, r.category))
        opened = _Open(r.end, parent.path, parent.step, parent.stage, parent.stage_step)
        if name in PATHS:
            opened = _Open(r.end, self._new_path(name, r.tid), None, None, None)
            if r.payload is not None:
                self.trace_ids.add(r.payload)
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
            kind = _STAGE_WAITS.get(ctx.stage, _WAIT)
            path.columns.add(kind, step, c.start, c.end, self.tracks("thread", c.tid))
            path.count("waits", c.start, c.end)
        if c.gpu is None:
            return
        s, e, stage, k = c.gpu_start, c.gpu_end, ctx.stage, ctx.stage_step
        graph_call = c.name_id in self.graph_launch_ids and stage in COMPUTE_STAGES
        if graph_call and self._last_graph_launch != (c.tid, c.correlation_id):  # once per call, not per kernel
            self._last_graph_launch = (c.tid, c.correlation_id)
            path.count("graph_launches", c.start, c.end)
            if k is not None:
                path.kernel_idle.graph_steps.add(k)
        if c.gpu == nsys.KERNEL and c.kernel_name_id in self.instrumentation_ids:
            path.count("instrumentation", s, e)
            if stage in COMPUTE_STAGES and k is not None:
                path.open_stage(k, s, e, self.tracks("stream", c.stream), stage)
        elif stage == INSERT_TASKS:
            path.count("insert", s, e)
        elif c.gpu in (nsys.KERNEL, nsys.GRAPH_TRACE) and stage in COMPUTE_STAGES and k is not None:
            path.count("compute" if c.gpu == nsys.KERNEL else "graph_records", s, e)
            self._gpu(path, c, COMPUTE, k, stage)
        elif c.gpu == nsys.MEMCPY and stage == POSTPROCESS and c.copy_kind in self.dtoh and k is not None:
            path.count("dtoh", s, e)
            self._gpu(path, c, COPY, k, stage)
        else:
            path.count("other", s, e)

    def _gpu(self, path: PathBuilder, c: nsys.Launch, kind: int, step: int, ctx_stage: str) -> None:
        stream = self.tracks("stream", c.stream)
        path.gpu(kind, step, c.gpu_start, c.gpu_end, stream, ctx_stage, self.call_names.get(c.name_id, "?"))
        if self.keep_flows:
            path.flows.append(
                (step, c.start, c.end, self.tracks("thread", c.tid), kind, c.gpu_start, c.gpu_end, stream)
            )

    # ------------------------------------------------------------------ the pass

    def run(self) -> Attribution:
        if not self.domain_ids:  # not the engine's export: nothing to attribute (and no pass over its calls)
            return self._result()
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
        keys = self._keys()
        for key, p in self.paths.items():
            if not len(p.columns.step):
                continue
            w = p.work
            paths[keys[key]] = PathAttribution(
                name=keys[key],
                spans=p.columns.table(names),
                flows=[_flow(f, names) for f in p.flows],
                compute_kernels=w.get("compute", GpuWork()),
                graph_records=w.get("graph_records", GpuWork()),
                graph_launches=w.get("graph_launches", GpuWork()),
                dtoh_copies=w.get("dtoh", GpuWork()),
                waits=w.get("waits", GpuWork()),
                instrumentation=w.get("instrumentation", GpuWork()),
                insert_work=w.get("insert", GpuWork()),
                other_work=w.get("other", GpuWork()),
                idle_iterations=p.idle_iterations,
                kernel_busy_ns=p.kernel_busy_ns,
                first_kernel_ns=p.first_kernel,
                kernel_idle=p.kernel_idle,
                pid=self.origin[key][1],
            )
        return Attribution(
            paths=paths,
            has_domain=bool(self.domain_ids),
            step_ranges=self.step_ranges,
            stage_ranges=self.stage_ranges,
            steps_outside_paths=self.steps_outside_paths,
            gpu_outside_paths=self.gpu_outside_paths,
            trace_ids=frozenset(self.trace_ids),
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
