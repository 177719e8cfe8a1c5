"""Checks of everything the replay relies on: slots, chunk continuity, lengths, budgets, finishing.

The rules are those of `docs/trace-format.md`. The steps are applied in order to a `BatchState`
(the same state machine the scheduler uses) after each preemption and insert is checked, so a
step costs O(its inserts + events) and the whole Azure conversation trace validates in well
under a second. The first broken rule raises `InputError(json_path, reason)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.trace.batch_state import (
    DECODING,
    FINISHED,
    PREFILLING,
    BatchState,
    RequestProgress,
)
from fdoverlap_cli.trace.format import Insert, Trace


@dataclass(frozen=True, slots=True)
class StepLoad:
    """What each step of a valid trace runs (lists indexed by step), and totals over the trace."""

    prefill_tokens: list[int]  # Σ chunk lengths inserted at the step
    decode_tokens: list[int]  # requests decoding at the step (one token each)
    chunks: list[int]  # prefill chunks inserted at the step
    kv_blocks: list[int]  # KV blocks held after the step
    preemptions: int
    chunked_prefills: int  # prefills (fresh or resumed) that took more than one chunk

    def tokens(self, step: int) -> int:
        return self.prefill_tokens[step] + self.decode_tokens[step]


def validate(trace: Trace) -> None:
    """Raise InputError(json_path, reason) for the first rule the trace breaks."""
    check_steps(trace)


def check_steps(trace: Trace) -> StepLoad:
    """Validate `trace` and return what each of its steps runs."""
    _check_requests(trace)
    index = trace.request_index
    config = trace.config
    state = BatchState(config, trace.requests)
    prefill_tokens: list[int] = []
    decode_tokens: list[int] = []
    chunks: list[int] = []
    kv_blocks: list[int] = []
    preemptions = chunked = 0
    for k, step in enumerate(trace.steps):
        state.advance()
        where = f"steps[{k}]"
        for j, slot in enumerate(step.preempt):
            _check_preempt(state, slot, f"{where}.preempt[{j}]")
            state.preempt(slot)
        preemptions += len(step.preempt)
        inserted: set[int] = set()
        for j, ins in enumerate(step.insert):
            p = _check_insert(state, index, ins, inserted, f"{where}.insert[{j}]")
            inserted.add(p.index)
            if ins.start > 0 and ins.start + ins.length == p.prefill_len:
                chunked += 1
            state.insert(p, ins.slot, ins.length)
        tokens = state.step_tokens()
        if tokens > config.max_num_batched_tokens:
            raise InputError(
                where,
                f"{tokens} tokens exceed max_num_batched_tokens {config.max_num_batched_tokens} "
                f"({state.chunk_tokens} prefill, {state.decoding} decode)",
            )
        if state.kv_blocks > config.num_kv_blocks:
            raise InputError(where, f"KV blocks {state.kv_blocks} exceed num_kv_blocks {config.num_kv_blocks}")
        prefill_tokens.append(state.chunk_tokens)
        decode_tokens.append(state.decoding)
        chunks.append(len(step.insert))
        kv_blocks.append(state.kv_blocks)
    _check_all_finish(state)
    return StepLoad(prefill_tokens, decode_tokens, chunks, kv_blocks, preemptions, chunked)


def _check_requests(trace: Trace) -> None:
    if not trace.requests:
        raise InputError("requests", "a trace needs at least one request")
    max_model_len = trace.config.max_model_len
    first: dict[str, int] = {}
    for i, r in enumerate(trace.requests):
        if r.id in first:
            raise InputError(f"requests[{i}].id", f"duplicate id '{r.id}' (first at requests[{first[r.id]}])")
        first[r.id] = i
        if r.prompt_len + r.output_len > max_model_len:
            raise InputError(
                f"requests[{i}]",
                f"prompt_len {r.prompt_len} + output_len {r.output_len} exceed max_model_len {max_model_len}",
            )


def _slot_in_range(state: BatchState, slot: int, where: str) -> None:
    if slot >= state.config.max_num_seqs:
        raise InputError(where, f"slot {slot} out of range [0, {state.config.max_num_seqs})")


def _holder(p: RequestProgress) -> str:
    if p.status == DECODING:
        return f"still holds request {p.request.id} until step {p.finish_step}"
    return f"holds request {p.request.id} (its prefill is at {p.prefilled} of {p.prefill_len} tokens)"


def _check_preempt(state: BatchState, slot: int, where: str) -> None:
    _slot_in_range(state, slot, where)
    if slot not in state.slot_owner:
        if state.slot_free_from.get(slot, 0) > state.step:
            raise InputError(where, f"slot {slot} is already preempted at this step")
        raise InputError(where, f"slot {slot} is empty: nothing to preempt")


def _check_insert(
    state: BatchState, index: dict[str, int], ins: Insert, inserted: set[int], where: str
) -> RequestProgress:
    k = state.step
    config = state.config
    if ins.request not in index:
        raise InputError(f"{where}.request", f"unknown request '{ins.request}'")
    p = state.progress[index[ins.request]]
    rid = ins.request
    if p.index in inserted:
        raise InputError(f"{where}.request", f"{rid} already has a chunk at this step")
    if p.status == FINISHED:
        raise InputError(f"{where}.request", f"{rid} already finished at step {p.finish_step}")
    if p.status == DECODING:
        raise InputError(
            f"{where}.request",
            f"{rid} finished its prefill at step {p.decode_from} and decodes in slot {p.slot}",
        )
    if k < p.request.arrival_step:
        raise InputError(f"{where}.request", f"{rid} arrives at step {p.request.arrival_step}")
    if k < p.ready_from:
        raise InputError(
            f"{where}.request", f"{rid} is preempted at this step; it can be re-inserted from step {p.ready_from}"
        )
    _slot_in_range(state, ins.slot, f"{where}.slot")
    if p.status == PREFILLING:
        if ins.slot != p.slot:
            raise InputError(f"{where}.slot", f"{rid}'s prefill is in slot {p.slot}, not slot {ins.slot}")
    else:
        owner = state.slot_owner.get(ins.slot)
        if owner is not None:
            raise InputError(f"{where}.slot", f"slot {ins.slot} {_holder(owner)}")
        if state.slot_free_from.get(ins.slot, 0) > k:
            raise InputError(
                f"{where}.slot",
                f"slot {ins.slot} is freed by a preemption at this step; it is free from step {k + 1}",
            )
    if ins.start != p.prefilled:
        raise InputError(
            f"{where}.start", f"chunk of {rid} starts at {ins.start} but its prefill has reached {p.prefilled}"
        )
    end = ins.start + ins.length
    if ins.length > config.max_model_len:
        raise InputError(f"{where}.len", f"chunk length {ins.length} exceeds max_model_len {config.max_model_len}")
    if end > config.max_model_len:
        raise InputError(f"{where}.len", f"chunk of {rid} ends at {end}, beyond max_model_len {config.max_model_len}")
    if end > p.prefill_len:
        raise InputError(f"{where}.len", f"chunk of {rid} ends at {end}, beyond its prefill of {p.prefill_len} tokens")
    return p


def _check_all_finish(state: BatchState) -> None:
    last = state.step
    for p in state.progress:
        done = p.status == FINISHED or (p.status == DECODING and p.finish_step <= last)
        if not done:
            r = p.request
            raise InputError(
                f"requests[{p.index}]",
                f"request {r.id} never finishes: {p.generated_by(last)} of {r.output_len} tokens by the last step",
            )
