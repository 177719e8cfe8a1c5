"""FastDeploy's GPU model runner step in its three stages, and the two execute_model paths.

    sync     execute_model:          1(k) 2(k) 3(k)
    overlap  execute_model_overlap:  1(k) 3(k-1) 2(k)   (the host saves k-1 while the GPU runs k)

1. preprocess_and_execute_model(k): check the host stop flag (get_stop); learn the token count
   (a host read of seq_lens_this_time, or the host's prediction for a decode-only batch);
   get_padding_offset; launch the forward pass.
2. postprocess(k): rebuild_padding and logits; set_value_by_flags_and_idx; sample; step_idx,
   max_dec_len and EOS (set_stop_value_multi_ends); update_inputs; then the async DtoH copies of
   sampled_token_ids and not_need_stop into pinned buffers and an event E_k.
3. save_model_output(k): E_k.synchronize(), then save_output: one message on the output queue
   (the SysV queue, or the ZMQ path's queue and sender thread).

Two designs (designs.py): FastDeploy's #6176 runner, and develop's, whose token_num_event stage sits
between save(k-1) and postprocess(k) (1(k) 3(k-1) t(k) 2(k); sync: 1(k) t(k) 2(k) 3(k)).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fdoverlap_cli.engine.annotate import Annotator
from fdoverlap_cli.engine.bookkeeping import Bookkeeping, StepPlan
from fdoverlap_cli.engine.buffers import ShareInputs
from fdoverlap_cli.engine.designs import DESIGNS, DEVELOP, make_design
from fdoverlap_cli.engine.graphs import ModelForward
from fdoverlap_cli.engine.model import SyntheticDecoder
from fdoverlap_cli.engine.recorder import StepRecorder
from fdoverlap_cli.errors import ExitCode, FdoError, OptionError, first_line
from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.measure.schema import INSERT_TASKS, POSTPROCESS, PREPROCESS, SAVE, STEP, TP_BARRIER, GpuPoint
from fdoverlap_cli.trace import Step

# The host stages an emulated extra host cost (`RunnerOptions.host_work_us`) can be spent in, by their span kinds
# (the exposed host time's categories): at the start of the insert, in stage 1 before the forward's launch, at the
# start of postprocess, and in save after its event wait (before the send).
HOST_WORK_STAGES = (Kind.INSERT, Kind.PREPROCESS, Kind.POSTPROCESS, Kind.SAVE)


@dataclass(frozen=True)
class RunnerOptions:
    """The design choices of the overlapped runner that FastDeploy made (or later changed)."""

    # "develop": FastDeploy's runner today (designs.py); "pr6176": the runner of PR #6176.
    design: str = DEVELOP
    # "sync": read seq_lens_this_time back to the host every step (a host sync, as in FastDeploy #6176);
    # "predict": for a decode-only batch use the host's own count (FastDeploy's follow-up, #6259).
    token_count: str = "predict"
    # "compute": the DtoH copies run on the compute stream (FastDeploy);
    # "separate": on a copy stream that waits for postprocess (vLLM's choice).
    copy_stream: str = "compute"
    # Snapshot preempted_idx at postprocess(k) so that save(k) sends step k's markers even though the
    # inserts of step k+1 run before it on the overlap path (#6259). Off: save(k) reads the live flags.
    snapshot_preempted: bool = True
    # Read the token count back every step and check the prediction against it (tests, debugging).
    verify_token_count: bool = False
    # GPU timestamps at the stage boundaries (the tool's own timing).
    timestamps: bool = True
    # An emulated extra host cost per step ("what if my scheduler costs 2 ms a step"): this many µs of busy
    # host work (a spin that holds the GIL, as Python code does) inside the stage `host_work_stage`.
    host_work_us: int = 0
    host_work_stage: str = Kind.PREPROCESS

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise OptionError("design", f"expected {' or '.join(DESIGNS)}, got '{self.design}'")
        if self.design == DEVELOP and not self.snapshot_preempted:
            raise OptionError(
                "snapshot_preempted",
                "the develop runner always snapshots them (last_preempted_idx); use --runner pr6176",
            )
        if self.token_count not in ("sync", "predict"):
            raise OptionError("token_count", f"expected sync or predict, got '{self.token_count}'")
        if self.copy_stream not in ("compute", "separate"):
            raise OptionError("copy_stream", f"expected compute or separate, got '{self.copy_stream}'")
        if isinstance(self.host_work_us, bool) or not isinstance(self.host_work_us, int) or self.host_work_us < 0:
            raise OptionError("host_work_us", f"expected a whole number of µs >= 0, got {self.host_work_us!r}")
        if self.host_work_us > 10_000_000:
            raise OptionError("host_work_us", f"at most 10,000,000 µs (10 s) a step, got {self.host_work_us:,}")
        if self.host_work_stage not in HOST_WORK_STAGES:
            stages = ", ".join(HOST_WORK_STAGES)
            raise OptionError("host_work_stage", f"expected one of {stages}, got '{self.host_work_stage}'")


def spend_host(ns: int) -> None:
    """Busy host work for `ns` nanoseconds: a spin on the monotonic clock (never a sleep: work holds the host)."""
    end = time.monotonic_ns() + ns
    while time.monotonic_ns() < end:
        pass


@dataclass
class ForwardOutput:
    """What stage 1 hands stage 2."""

    row: int  # the step's row in the recorder
    plan: StepPlan
    hidden: Any  # [token_num, H], None for a step with no tokens
    cu_seqlens_q: Any


@dataclass
class PendingSave:
    """What stage 2 hands stage 3: the step's event and what save_model_output must send."""

    row: int
    plan: StepPlan
    event: Any
    sampled: Any  # the device tensor being copied: kept alive until the copy is done
    insert_epoch: int  # inserts so far when the step was launched


class ModelRunner:
    """One replayed FastDeploy worker: the buffers, the model, the stages and the two paths."""

    def __init__(
        self,
        device: Any,
        ops: Any,
        model: SyntheticDecoder,
        share: ShareInputs,
        book: Bookkeeping,
        options: RunnerOptions,
        sender: Any,
        recorder: StepRecorder,
        annotator: Annotator,
        forward: ModelForward,
        barrier: Callable[[bool], None] | None = None,
    ) -> None:
        """`barrier(overlap)`: a tensor-parallel rank's wait for the others before each iteration (parallel.py)."""
        self.device = device
        self.ops = ops
        self.model = model
        self.share = share
        self.book = book
        self.options = options
        self.sender = sender  # send(sampled_host, not_need_stop, preempted) -> the (start, end) it blocked, or None
        self.rec = recorder
        self.nvtx = annotator
        self.forward = forward  # get_padding_offset and the model's forward: a graph replay or eager
        self.copy_stream = device.copy_stream if options.copy_stream == "separate" else None
        self.pending: PendingSave | None = None
        self.insert_epoch = 0
        self._insert_times = (-1, -1)
        self.barrier = barrier
        self._barrier_times = (-1, -1)
        self.iteration_step = -1
        self._host_work_ns = options.host_work_us * 1000
        self.design = make_design(options.design, self)

    def _host_work(self, stage: str) -> None:
        """The emulated extra host cost, where the options put it (in `stage`'s span)."""
        if self._host_work_ns and stage == self.options.host_work_stage:
            spend_host(self._host_work_ns)

    # ------------------------------------------------------------------ the engine's insert

    def insert_tasks(self, k: int, step: Step) -> None:
        """FastDeploy's insert for step k: preemptions and prefill chunks, through one op, then set_stop(True)."""
        t0 = time.monotonic_ns()
        self._host_work(Kind.INSERT)
        if step.insert or step.preempt:
            self.nvtx.push(INSERT_TASKS, k)
            s = self.share
            meta, tokens, preempt = self.book.apply_step(step)
            self.ops.insert_tasks(
                s.input_ids,
                s.pre_ids,
                s.seq_lens_this_time,
                s.seq_lens_encoder,
                s.seq_lens_decoder,
                s.prompt_lens,
                s.step_idx,
                s.max_dec_len,
                s.stop_flags,
                self.device.host_tensor(meta),
                self.device.host_tensor(tokens),
                self.device.host_tensor(np.asarray(preempt, dtype=np.int32)),
            )
            self.design.after_insert(step, preempt)
            self.nvtx.pop()
        self._insert_times = (t0, time.monotonic_ns())

    # ------------------------------------------------------------------ stage 1

    def preprocess_and_execute_model(self, k: int) -> ForwardOutput | None:
        """Stage 1 of step k; None when no slot runs, as the design tells (the worker idles)."""
        t0 = time.monotonic_ns()
        plan = self.design.plan(k)
        if plan is None:
            return None
        self.nvtx.push(PREPROCESS, k)
        row = self.rec.new_row(k)
        self.rec.set(row, "insert_start", self._insert_times[0])
        self.rec.set(row, "insert_end", self._insert_times[1])
        self.rec.set(row, "barrier_start", self._barrier_times[0])
        self.rec.set(row, "barrier_end", self._barrier_times[1])
        self.rec.set(row, "pre_start", t0)
        self.rec.set(row, "running", plan.running)
        self.rec.set(row, "generated", len(plan.producers))
        self.rec.set(row, "prefill_tokens", plan.prefill_tokens)
        self._host_work(Kind.PREPROCESS)
        token_num = self.design.token_count(k, plan)
        self.rec.set(row, "tokens", token_num)
        self.rec.mark(row, GpuPoint.PRE_START)
        self.design.before_forward(k)
        fwd = self.forward.run(token_num, plan.decode_only)
        if fwd.hidden is not None:
            self.rec.set(row, "model_ns", fwd.model_ns)
            self.rec.set(row, "graph_rows", fwd.graph_rows)
        self.rec.mark(row, GpuPoint.FWD_END)
        self.nvtx.pop()
        self.rec.set(row, "pre_end", time.monotonic_ns())
        return ForwardOutput(row=row, plan=plan, hidden=fwd.hidden, cu_seqlens_q=fwd.cu_seqlens_q)

    def read_token_count(self) -> int:
        """The batch's token count read back from the device: a host sync, recorded as a read-back wait."""
        t0 = time.monotonic_ns()
        actual = int(self.share.seq_lens_this_time.numpy().sum())
        self.rec.wait(self.iteration_step, t0, time.monotonic_ns(), Kind.READBACK)
        return actual

    # ------------------------------------------------------------------ stage 2

    def postprocess(self, fwd: ForwardOutput) -> PendingSave:
        """Stage 2 of the step: sample, update the step state on the device, start the DtoH copies."""
        k, row = fwd.plan.step, fwd.row
        self.rec.set(row, "post_start", time.monotonic_ns())
        self.nvtx.push(POSTPROCESS, k)
        self._host_work(Kind.POSTPROCESS)
        s, ops = self.share, self.ops
        self.rec.mark(row, GpuPoint.POST_START)
        if fwd.hidden is not None:
            t_model = time.monotonic_ns()
            last = ops.rebuild_padding(fwd.hidden, fwd.cu_seqlens_q, s.seq_lens_this_time)
            sampled = ops.sample_greedy(self.model.compute_logits(last), s.eos_token_id)
            self.rec.add(row, "model_ns", time.monotonic_ns() - t_model)
        else:
            sampled = s.idle_tokens
        lens = (s.seq_lens_this_time, s.seq_lens_encoder, s.seq_lens_decoder)
        ops.set_value_by_flags_and_idx(s.pre_ids, s.input_ids, *lens, s.step_idx, s.stop_flags)
        ops.set_stop_value_multi_ends(
            sampled,
            s.stop_flags,
            s.seq_lens_this_time,
            s.seq_lens_decoder,
            s.prompt_lens,
            s.step_idx,
            s.max_dec_len,
            s.end_ids,
            s.next_tokens,
        )
        ops.update_inputs(
            s.stop_flags,
            s.not_need_stop_device,
            s.seq_lens_this_time,
            s.seq_lens_encoder,
            s.seq_lens_decoder,
            s.prompt_lens,
            sampled,
            s.input_ids,
            s.next_tokens,
        )
        self.rec.mark(row, GpuPoint.POST_END)
        if self.design.snapshot_preempted:
            s.last_preempted_idx[:] = s.preempted_idx
            s.preempted_idx[:] = 0
        event = self._copy_to_host(row, sampled)
        self.nvtx.pop()
        self.rec.set(row, "post_end", time.monotonic_ns())
        return PendingSave(row, fwd.plan, event, sampled, self.insert_epoch)

    def _copy_to_host(self, row: int, sampled: Any) -> Any:
        """The async DtoH copies of the step's tokens (and, on #6176, its stop flag), and the event E_k after them."""
        dev, s, stream = self.device, self.share, self.copy_stream
        if stream is not None:
            done = dev.new_event()
            dev.record_event(done)
            dev.wait_event(stream, done)
        self.rec.mark(row, GpuPoint.COPY_START, stream)
        dev.copy_to_host(s.sampled_token_ids, sampled, stream)
        if self.design.copies_stop_flag:
            dev.copy_to_host(s.not_need_stop_staged, s.not_need_stop_device, stream)
        self.rec.mark(row, GpuPoint.COPY_END, stream)
        event = dev.new_event()
        dev.record_event(event, stream)
        return event

    # ------------------------------------------------------------------ stage 3

    def save_model_output(self, p: PendingSave) -> None:
        """Stage 3: wait for E_k, send the step's message, then the design's after-save (#6176: the stop flag)."""
        k = p.plan.step
        t0 = time.monotonic_ns()
        self.rec.set(p.row, "save_start", t0)
        self.nvtx.push(SAVE, k)
        s = self.share
        p.event.synchronize()
        self.rec.wait(self.iteration_step, t0, time.monotonic_ns(), Kind.EVENT_WAIT)
        self._host_work(Kind.SAVE)
        preempted = s.last_preempted_idx if self.design.snapshot_preempted else s.preempted_idx
        self.device.write_host(s.preempted_for_save, preempted)
        blocked = self.sender.send(s.sampled_token_ids, self.design.stop_flag(), s.preempted_for_save)
        if blocked is not None:  # back-pressure from a full queue: the host waits, it does not work
            self.rec.wait(self.iteration_step, *blocked, Kind.BACKPRESSURE)
        self.rec.emitted(p.row, p.plan.producers, preempted)
        preempted[:] = 0
        self.book.record_tokens(p.plan.producers, s.sampled_token_ids.numpy().reshape(-1))
        self.design.after_save(p)
        self.nvtx.pop()
        self.rec.set(p.row, "save_end", time.monotonic_ns())

    # ------------------------------------------------------------------ the two paths

    def iteration(self, k: int, step: Step, overlap: bool) -> bool:
        """One loop iteration of the worker: the engine's insert for step k, then execute_model[_overlap](k)."""
        self.iteration_step = k
        t0 = time.monotonic_ns()
        self.nvtx.push(STEP, k)
        try:
            self._tp_barrier(k, overlap)
            self.insert_tasks(k, step)
            ran = self.execute_model_overlap(k) if overlap else self.execute_model(k)
        except (OSError, RuntimeError, ValueError) as e:  # an op failed (a CUDA error, a failed check): say where
            raise FdoError(f"step {k}: {first_line(e)}", exit_code=ExitCode.INTERNAL) from e
        self.nvtx.pop()
        if ran:
            row = self.rec.rows - 1
            self.rec.set(row, "iter_start", t0)
            self.rec.set(row, "iter_end", time.monotonic_ns())
        return ran

    def _tp_barrier(self, k: int, overlap: bool) -> None:
        """FastDeploy's barrier across tensor-parallel ranks before the iteration's insert and launch (none alone)."""
        if self.barrier is None:
            return
        t0 = time.monotonic_ns()
        self.nvtx.push(TP_BARRIER, k)
        self.barrier(overlap)
        self.nvtx.pop()
        self._barrier_times = (t0, time.monotonic_ns())

    def execute_model(self, k: int) -> bool:
        """Sync path: 1(k) [t(k)] 2(k) 3(k). Returns whether step k ran."""
        fwd = self.preprocess_and_execute_model(k)
        if fwd is None:
            return False
        self.design.token_num_stage(k)
        self.save_model_output(self.postprocess(fwd))
        return True

    def execute_model_overlap(self, k: int) -> bool:
        """Overlap path: 1(k) 3(k-1) [t(k)] 2(k). Step k's save happens in the next call (or in flush);
        postprocess only when slots run."""
        fwd = self.preprocess_and_execute_model(k)
        if self.pending is not None:
            self.save_model_output(self.pending)
            self.pending = None
        if fwd is None:
            return False
        self.design.token_num_stage(k)
        self.pending = self.postprocess(fwd)
        return True

    def flush(self) -> None:
        """Save the last launched step of the overlap path."""
        if self.pending is not None:
            self.save_model_output(self.pending)
            self.pending = None
