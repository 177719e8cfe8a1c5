"""The two runner designs the engine replays: FastDeploy's #6176 runner and FastDeploy's develop runner.

`ModelRunner` (runner.py) holds the stages both share; a design decides the points where they differ:

    point                      pr6176                                   develop
    idle                       host not_need_stop flag (get_stop)       no slot runs (the host's own view)
    token count                sync read-back, or predict (exact)       cached upper bound (running slots at the
                                                                        last launch), read back when the step
                                                                        has a prefill or no cached count
    before the forward         -                                        async copy of seq_lens_this_time and
                                                                        token_num_event
    after save(k-1) / 2(k)     -                                        token_num_event: wait, cache the count
    DtoH copies                sampled_token_ids and not_need_stop      sampled_token_ids only
    insert                     set_stop(True)                           reset the cached count (#6753), clear
                                                                        the inserted slots' preempted flags
    preemption markers         snapshot at postprocess (or not)         always snapshot (last_preempted_idx)
    message sign               not_need_stop                            always +msg_id (no not_need_stop)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fdoverlap_cli.errors import CheckFailed
from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.measure.schema import TOKEN_NUM_EVENT

if TYPE_CHECKING:
    from fdoverlap_cli.engine.bookkeeping import StepPlan
    from fdoverlap_cli.engine.runner import ModelRunner, PendingSave
    from fdoverlap_cli.trace import Step

PR6176 = "pr6176"
DEVELOP = "develop"
DESIGNS = (DEVELOP, PR6176)
SPECULATIVE_TOKENS = 0  # no speculative decoding in the replay: the upper bound is × (0 + 1)


class Pr6176:
    """The runner of FastDeploy PR #6176: not_need_stop, the token count read back or predicted exactly."""

    name = PR6176
    copies_stop_flag = True

    def __init__(self, runner: ModelRunner) -> None:
        self.r = runner

    @property
    def snapshot_preempted(self) -> bool:
        return self.r.options.snapshot_preempted

    def after_insert(self, step: Step, preempt: list[int]) -> None:
        """The insert's host side: preemption flags, and the host stop flag raised for new work."""
        s = self.r.share
        s.preempted_idx[preempt] = 1
        if step.insert:
            self.r.ops.set_stop(s.not_need_stop, True)
            self.r.insert_epoch += 1

    def plan(self, k: int) -> StepPlan | None:
        """The step's plan, or None when the host flag says no slot runs (the worker idles)."""
        r = self.r
        if not bool(r.ops.get_stop(r.share.not_need_stop).numpy()[0]):
            return None
        return r.book.launch(k)

    def token_count(self, k: int, plan: StepPlan) -> int:
        """Tokens of the batch: predicted for decode-only batches, else read back (a host sync)."""
        r, opts = self.r, self.r.options
        if opts.token_count == "predict" and plan.decode_only and not opts.verify_token_count:
            return plan.token_num
        actual = r.read_token_count()
        if opts.verify_token_count and actual != plan.token_num:
            raise CheckFailed(f"step {k}: the host predicted {plan.token_num} tokens but the batch has {actual}")
        if opts.token_count == "predict" and plan.decode_only:
            return plan.token_num
        return actual

    def before_forward(self, k: int) -> None:
        """Nothing: #6176 learns the next count at the next launch."""

    def token_num_stage(self, k: int) -> None:
        """Nothing: #6176 has no token_num_event."""

    def stop_flag(self) -> Any:
        """The host buffer whose value signs the step's message."""
        return self.r.share.not_need_stop_staged

    def after_save(self, p: PendingSave) -> None:
        """Fold the step's stop flag into the host flag, unless an insert since the launch has raised it."""
        r, s = self.r, self.r.share
        if p.insert_epoch == r.insert_epoch:
            r.ops.set_stop(s.not_need_stop, bool(s.not_need_stop_staged.numpy()[0]))


class Develop(Pr6176):
    """FastDeploy's develop runner (2026): no not_need_stop, an upper-bound token count, token_num_event."""

    name = DEVELOP
    copies_stop_flag = False

    def __init__(self, runner: ModelRunner) -> None:
        super().__init__(runner)
        self.cached: int | None = None  # the next launch's predicted token count (None: read it back)
        self.event: Any = None  # token_num_event of the last launch

    @property
    def snapshot_preempted(self) -> bool:
        return True

    def after_insert(self, step: Step, preempt: list[int]) -> None:
        """An insert clears its slots' preemption flags (this step's own preemptions are set after), and a
        prefill insert resets the cached count (#6753: else the next launch packs too few tokens)."""
        s = self.r.share
        for ins in step.insert:
            s.preempted_idx[ins.slot] = 0
        s.preempted_idx[preempt] = 1
        if step.insert:
            self.cached = None

    def plan(self, k: int) -> StepPlan | None:
        """The step's plan, or None when no slot runs: the launch would carry no token (the worker idles)."""
        plan = self.r.book.launch(k)
        return plan if plan.running else None

    def token_count(self, k: int, plan: StepPlan) -> int:
        """The cached upper bound for a decode-only batch; else (a prefill, no cached count) a blocking read-back.

        The host's own count of the batch (`plan.token_num`) checks it: a bound below it would drop tokens
        from the packing (get_padding_offset packs `token_num` rows), so it is a failed check, never a run."""
        r, opts = self.r, self.r.options
        predict = opts.token_count == "predict" and plan.decode_only and self.cached is not None and self.cached > 0
        if predict and not opts.verify_token_count:
            count = self.cached
        else:
            actual = r.read_token_count()
            if opts.verify_token_count and actual != plan.token_num:
                raise CheckFailed(f"step {k}: the host counted {plan.token_num} tokens but the batch has {actual}")
            count = self.cached if predict else actual
        assert count is not None
        if count < plan.token_num:
            raise CheckFailed(
                f"step {k}: the predicted upper bound of {count} tokens is below the batch's {plan.token_num}: "
                "the packing would drop tokens"
            )
        return count

    def before_forward(self, k: int) -> None:
        """The async copy of seq_lens_this_time (the launch's lengths) and token_num_event after it, on the
        compute stream before the forward: the event does not wait for the forward."""
        dev, s = self.r.device, self.r.share
        dev.copy_to_host(s.seq_lens_this_time_host, s.seq_lens_this_time)
        self.event = dev.new_event()
        dev.record_event(self.event)

    def token_num_stage(self, k: int) -> None:
        """token_num_event.synchronize(), then the next launch's upper bound: (running + block-step slots) ×
        (speculative tokens + 1); block steps are not modelled (0). A wait of its own, in its own range."""
        r = self.r
        t0 = time.monotonic_ns()
        r.nvtx.push(TOKEN_NUM_EVENT, k)
        self.event.synchronize()
        lens = r.share.seq_lens_this_time_host.numpy()
        self.cached = int((lens > 0).sum()) * (SPECULATIVE_TOKENS + 1)
        r.nvtx.pop()
        r.rec.wait(r.iteration_step, t0, time.monotonic_ns(), Kind.TOKEN_NUM)

    def stop_flag(self) -> Any:
        return self.r.share.running_flag

    def after_save(self, p: PendingSave) -> None:
        """Nothing: no not_need_stop to fold."""


def make_design(name: str, runner: ModelRunner) -> Pr6176:
    """The design object of runner `name` (one of DESIGNS) for `runner`."""
    return {PR6176: Pr6176, DEVELOP: Develop}[name](runner)
