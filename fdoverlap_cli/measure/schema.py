"""The names two sides must agree on, each defined once: NVTX ranges, the step table, the timing kernels.

The engine writes them (engine/annotate.py, engine/recorder.py, custom_ops/timing/), the nsys reader
and `profile` read them (nsys/steps.py, nsys/profile.py), run.json stores them, and the tests import
them from here: a name changed here changes on both sides.
"""

from __future__ import annotations

from enum import IntEnum

from fdoverlap_cli.measure.records import Kind, Track

# --------------------------------------------------------------------------- NVTX

DOMAIN = "fdoverlap"
PATHS = ("sync", "overlap")  # execute_model and execute_model_overlap; also the names of their NVTX ranges

INSERT_TASKS = "insert_tasks"  # payload k, only when step k inserts or preempts
PREPROCESS = "preprocess_and_execute_model"  # stage 1, payload k
POSTPROCESS = "postprocess"  # stage 2, payload k
SAVE = "save_model_output"  # stage 3, payload: the step it saves
TP_BARRIER = "tp_barrier"  # a tensor-parallel rank's barrier before the insert and launch of step k (payload k)
TOKEN_NUM_EVENT = "token_num_event"  # the develop runner's wait for the token count's copy, payload k
STEP = "step"  # one loop iteration, payload: the step it launches
MEASURE = "measure"  # the measured part of a run, the capture range of `profile --capture measure`
STAGE_RANGES = (INSERT_TASKS, PREPROCESS, POSTPROCESS, SAVE, TP_BARRIER, TOKEN_NUM_EVENT)
STAGE_KINDS = {
    INSERT_TASKS: Kind.INSERT,
    PREPROCESS: Kind.PREPROCESS,
    POSTPROCESS: Kind.POSTPROCESS,
    SAVE: Kind.SAVE,
    TP_BARRIER: Kind.TP_BARRIER,
    TOKEN_NUM_EVENT: Kind.TOKEN_NUM,  # a wait kind: the stage is the wait (and the count it then takes)
}
COMPUTE_STAGES = (PREPROCESS, POSTPROCESS)  # the stages whose kernels are C_k
# The kind of a host-blocking CUDA call inside a stage range, as the nsys reader tells the waits apart: in stage 1
# it reads the token count back, in stage 3 it waits for E_k, in token_num_event for the count's copy. Elsewhere
# a wait is a Kind.WAIT. (Back-pressure blocks in msgsnd or on the ZMQ queue, not in CUDA: nsys sees it as save time.)
STAGE_WAITS = {PREPROCESS: Kind.READBACK, SAVE: Kind.EVENT_WAIT, TOKEN_NUM_EVENT: Kind.TOKEN_NUM}
# Every range, in the order the engine registers them as categories of the domain (category id = index + 1).
RANGES = (*STAGE_RANGES, STEP, MEASURE, *PATHS)
CAPTURE_RANGE = f"{MEASURE}@{DOMAIN}"  # `nsys profile -c nvtx -p CAPTURE_RANGE`


def trace_payload(sha256: str) -> int:
    """The payload of a path range: the trace's sha256 as a 60-bit integer, so an export names its trace."""
    return int(sha256[:15], 16)


# --------------------------------------------------------------------------- the step table (engine/recorder.py)


class GpuPoint(IntEnum):
    """The GPU timestamps of one step, in stream order (the index into a step's row of the device buffer)."""

    PRE_START = 0
    FWD_END = 1
    POST_START = 2
    POST_END = 3
    COPY_START = 4
    COPY_END = 5


GPU_POINTS = tuple(f"gpu_{p.name.lower()}" for p in GpuPoint)  # their step-table columns
# Host columns of one executed step (-1: did not happen).
HOST_COLUMNS = (
    "step",  # the trace step this executed step is
    "tokens",  # packed tokens of the batch
    "generated",  # slots that emit a token at this step
    "emitted",  # tokens the step's message carried (a preemption marker sent in a token's place is none)
    "running",  # slots that ran
    "prefill_tokens",
    "model_ns",  # host time launching the model's own work (forward, logits, sampling); the rest is harness
    "graph_rows",  # the CUDA graph's batch size the forward replayed; 0: launched eagerly
    "iter_start",  # the loop iteration that launched the step (inserts included)
    "iter_end",
    "insert_start",
    "insert_end",
    "barrier_start",  # the tensor-parallel barrier before the iteration's insert (-1 with one rank)
    "barrier_end",
    "pre_start",
    "pre_end",
    "post_start",
    "post_end",
    "save_start",  # save_model_output of this step (in the next iteration on the overlap path)
    "save_end",
)
# Host waits on the GPU; wait_step: the iteration's step; wait_kind: the index of the wait's kind in WAIT_KINDS.
WAIT_COLUMNS = ("wait_step", "wait_start", "wait_end", "wait_kind")
WAIT_KINDS = Kind.WAITS  # a wait_kind outside them (or a table without the column) is a Kind.WAIT
# (kind, start column, end column, track) of each span a step row holds; None: the copy stream's track,
# or the compute stream's when the copies run there.
STEP_SPANS = (
    (Kind.ITERATION, "iter_start", "iter_end", Track.HOST),
    (Kind.INSERT, "insert_start", "insert_end", Track.HOST),
    (Kind.TP_BARRIER, "barrier_start", "barrier_end", Track.HOST),
    (Kind.PREPROCESS, "pre_start", "pre_end", Track.HOST),
    (Kind.POSTPROCESS, "post_start", "post_end", Track.HOST),
    (Kind.SAVE, "save_start", "save_end", Track.HOST),
    (Kind.COMPUTE, "gpu_pre_start", "gpu_fwd_end", Track.COMPUTE_STREAM),
    (Kind.COMPUTE, "gpu_post_start", "gpu_post_end", Track.COMPUTE_STREAM),
    (Kind.COPY, "gpu_copy_start", "gpu_copy_end", None),
)
WAIT_SPAN = (Kind.WAIT, "wait_start", "wait_end", Track.HOST)  # stepped by wait_step
TIME_COLUMNS = (*(c for _, s, e, _ in STEP_SPANS for c in (s, e)), "wait_start", "wait_end")

# --------------------------------------------------------------------------- exposed host time (measure/exposure.py)

# What the host did while the GPU idled between steps, by category, in the order the tables show them:
# (category, label). A host span kind is the category of its own name unless EXPOSED_AS folds it into
# another; OTHER is the iteration outside every stage and the time outside every iteration. A new host
# kind (a stage or a wait) gets a row here and is attributed, tabled and drawn with no other change.
OTHER = "other"
EXPOSED = (
    (Kind.TP_BARRIER, "tensor-parallel barrier"),
    (Kind.INSERT, "insert"),
    (Kind.PREPROCESS, "preprocess (before the launch)"),
    (Kind.POSTPROCESS, "postprocess"),
    (Kind.SAVE, "save (after its wait)"),
    (Kind.BACKPRESSURE, "send back-pressure"),
    (Kind.READBACK, "token-count read-back"),
    (Kind.EVENT_WAIT, "event wait"),
    (Kind.TOKEN_NUM, "token_num_event wait"),
    (Kind.WAIT, "other host waits"),
    (OTHER, "other (between stages)"),
)
EXPOSED_AS = {Kind.ITERATION: OTHER}

# --------------------------------------------------------------------------- timing kernels (custom_ops/timing/)

# record_timestamp's and clock_samples' kernels, as Nsight Systems names them: the engine's own
# instrumentation, counted apart and never part of C_k.
TIMING_KERNELS = frozenset({"RecordTimestampKernel", "PingPongKernel"})
