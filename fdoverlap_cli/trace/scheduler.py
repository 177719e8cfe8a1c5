"""A deterministic continuous-batching scheduler simulation: requests with arrival steps -> `Step`s.

The policy (vLLM-style chunked prefill with recompute preemption), at each step k:

1. requests that finished before k free their slot and blocks; every decoding request feeds one
   token (decode first);
2. while the blocks held exceed `num_kv_blocks`, preempt the most recently admitted request that
   holds a slot (it is re-queued at the front and later re-prefills prompt + generated tokens);
3. unfinished prefills continue, in admission order, with the token budget left after the
   decodes (a prefill longer than the budget is split into chunks); a chunk that needs more
   blocks than are free preempts the most recently admitted request until it fits (if that is
   the requester itself, it is the one preempted);
4. waiting requests are admitted first in, first out (preempted ones at the front) into the
   lowest free slot while a slot, budget and the first chunk's blocks are free; the head of the
   queue blocks the rest (no overtaking);
5. a step where no request holds a slot and none has arrived is idle: it is cut out, and the
   arrival steps after it move back by the steps cut.

The produced steps obey the rules of `docs/trace-format.md` by construction: they are applied to
the same `BatchState` that the validator checks traces against.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any

from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.trace.batch_state import PREFILLING, BatchState, blocks_for
from fdoverlap_cli.trace.format import Insert, Request, Step, Trace, TraceConfig, config_maximum, too_large

_NO_WORK = Step()
MAX_STEPS = 10_000_000  # hours of replay even for a tiny model: more is a mistake in the options
MAX_REQUESTS = 1_000_000  # 50 times the Azure conversation trace; a bigger workload is better sampled


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduler's result: the requests (arrival steps as scheduled) and the steps."""

    requests: tuple[Request, ...]  # input order; arrival_step after idle stretches were cut
    steps: tuple[Step, ...]
    preemptions: int
    idle_steps_cut: int

    def to_trace(self, config: TraceConfig, meta: dict[str, Any]) -> Trace:
        """The trace these steps make under `config`."""
        return Trace(config=config, requests=self.requests, steps=self.steps, meta=meta)


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """The scheduler's budgets as the trace commands take them; None: derived from the requests."""

    max_num_seqs: int = 16
    max_model_len: int | None = None  # None: the longest request, rounded up to a block
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: room for every slot at max_model_len
    max_num_batched_tokens: int = 2048

    def config(self, requests: Sequence[Request] = (), *, seed: int = 0) -> TraceConfig:
        """The TraceConfig, with what is None derived: max_model_len from the longest of `requests`;
        num_kv_blocks = max_num_seqs * ceil(max_model_len / block_size), so nothing is ever preempted."""
        block = max(self.block_size, 1)
        max_model_len = self.max_model_len
        if max_model_len is None:
            longest = max((r.prompt_len + r.output_len for r in requests), default=2)
            max_model_len = blocks_for(longest, block) * block
        num_kv_blocks = self.num_kv_blocks
        if num_kv_blocks is None:
            num_kv_blocks = self.max_num_seqs * blocks_for(max_model_len, block)
        return TraceConfig(
            max_num_seqs=self.max_num_seqs,
            max_model_len=max_model_len,
            block_size=self.block_size,
            num_kv_blocks=num_kv_blocks,
            max_num_batched_tokens=self.max_num_batched_tokens,
            seed=seed,
        )

    def flags(self) -> list[str]:
        """The command-line options that set these budgets (derived ones left out)."""
        return [
            f"--{name.replace('_', '-')} {value}"
            for name in ("max_num_seqs", "max_model_len", "block_size", "num_kv_blocks", "max_num_batched_tokens")
            if (value := getattr(self, name)) is not None
        ]

    def parameters(self) -> dict[str, int]:
        """The budgets that are set, by field name (for a trace's meta)."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


def schedule_trace(
    requests: Sequence[Request], options: SchedulerOptions, meta: dict[str, Any], *, seed: int = 0
) -> Trace:
    """Schedule `requests` under `options` into a trace; meta gains the scheduler's counts."""
    config = options.config(requests, seed=seed)
    result = schedule(requests, config)
    counts = {"preemptions": result.preemptions, "idle_steps_cut": result.idle_steps_cut}
    return result.to_trace(config, {**meta, "scheduler": counts})


def check_schedulable(requests: Sequence[Request], config: TraceConfig) -> None:
    """Raise FdoError for a configuration or request the scheduler cannot serve."""
    for name in ("max_num_seqs", "block_size", "num_kv_blocks", "max_num_batched_tokens"):
        if getattr(config, name) < 1:
            raise FdoError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.max_num_batched_tokens < config.max_num_seqs:
        raise FdoError(
            f"max_num_batched_tokens {config.max_num_batched_tokens} is below max_num_seqs "
            f"{config.max_num_seqs}: a step must fit one decode token per slot"
        )
    for name in TraceConfig.__slots__:
        if getattr(config, name) > config_maximum(name):
            raise FdoError(f"{name}: {too_large(getattr(config, name), config_maximum(name))}")
    if not requests:
        raise FdoError("no requests to schedule")
    if len(requests) > MAX_REQUESTS:
        raise FdoError(f"{len(requests):,} requests are more than a trace holds ({MAX_REQUESTS:,})")
    seen: set[str] = set()
    for r in requests:
        if r.id in seen:
            raise FdoError(f"duplicate request id '{r.id}'")
        seen.add(r.id)
        if r.prompt_len + r.output_len > config.max_model_len:
            raise FdoError(
                f"request {r.id}: prompt {r.prompt_len} + output {r.output_len} tokens exceed "
                f"max_model_len {config.max_model_len}"
            )
        # Its cache peaks at its last step: prompt + output - 1 tokens (the last token is never fed).
        peak = blocks_for(r.prompt_len + r.output_len - 1, config.block_size)
        if peak > config.num_kv_blocks:
            raise FdoError(
                f"request {r.id} alone needs {peak} KV blocks (prompt {r.prompt_len} + output "
                f"{r.output_len} tokens, block_size {config.block_size}) but num_kv_blocks is "
                f"{config.num_kv_blocks}"
            )
    fewest = _fewest_steps(requests, config.max_num_batched_tokens)
    if fewest > MAX_STEPS:
        raise FdoError(
            f"these requests need at least {fewest:,} steps and a trace holds at most {MAX_STEPS:,}: "
            "use fewer or shorter requests, or a larger max_num_batched_tokens"
        )


def _fewest_steps(requests: Sequence[Request], budget: int) -> int:
    """A lower bound of the steps: each request prefills in ceil(prompt / budget) steps, then decodes
    output − 1 more; and every step runs at most `budget` of the Σ(prompt + output − 1) tokens."""
    one = max(-(-r.prompt_len // budget) + r.output_len - 1 for r in requests)
    total = sum(r.prompt_len + r.output_len - 1 for r in requests)
    return max(one, -(-total // budget))


def schedule(requests: Sequence[Request], config: TraceConfig) -> Schedule:
    """Schedule `requests` (arrival order: arrival_step, then input order) under `config`."""
    check_schedulable(requests, config)
    return _Scheduler(requests, config).run()


class _Scheduler:
    def __init__(self, requests: Sequence[Request], config: TraceConfig) -> None:
        self.requests = requests
        self.config = config
        self.state = BatchState(config, requests)
        order = sorted(range(len(requests)), key=lambda i: (requests[i].arrival_step, i))
        self.waiting: deque[int] = deque(order)
        self.free_slots = list(range(min(config.max_num_seqs, len(requests))))  # the lowest slots are enough
        self.offset = 0  # steps cut out so far: a request arrives at arrival_step - offset
        self.arrival = [-1] * len(requests)  # arrival step as scheduled, set at first admission
        self.preempted_slots: list[int] = []
        self.preemptions = 0

    def run(self) -> Schedule:
        state = self.state
        steps: list[Step] = []
        n = len(self.requests)
        while True:
            for slot in state.advance():
                heapq.heappush(self.free_slots, slot)
            if state.finished == n:
                break
            if len(steps) == MAX_STEPS:
                raise FdoError(f"the schedule passed {MAX_STEPS:,} steps, the most a trace holds")
            k = state.step
            if not state.running:
                head = self.requests[self.waiting[0]].arrival_step - self.offset
                self.offset += max(0, head - k)
            self.preempted_slots = []
            while state.kv_blocks > self.config.num_kv_blocks:
                self._preempt_most_recent()
            budget = self.config.max_num_batched_tokens - state.decoding
            inserts = self._continue_prefills(budget)
            budget -= sum(i.length for i in inserts)
            inserts += self._admit(budget)
            if inserts or self.preempted_slots:
                steps.append(Step(insert=tuple(inserts), preempt=tuple(self.preempted_slots)))
            else:
                steps.append(_NO_WORK)
        scheduled = tuple(
            dataclasses.replace(r, arrival_step=self.arrival[i]) if r.arrival_step != self.arrival[i] else r
            for i, r in enumerate(self.requests)
        )
        return Schedule(scheduled, tuple(steps), self.preemptions, self.offset)

    def _preempt_most_recent(self) -> int:
        victim = self.state.most_recent()
        slot = victim.slot
        self.state.preempt(slot)
        self.waiting.appendleft(victim.index)
        self.preempted_slots.append(slot)
        self.preemptions += 1
        return victim.index

    def _continue_prefills(self, budget: int) -> list[Insert]:
        state = self.state
        inserts = []
        for p in list(state.prefilling.values()):
            if budget == 0:
                break
            if p.status != PREFILLING:  # preempted by an earlier chunk of this loop
                continue
            length = min(p.prefill_len - p.prefilled, budget)
            need = blocks_for(p.prefilled + length, state.block_size) - p.blocks
            while need > self.config.num_kv_blocks - state.kv_blocks:
                if self._preempt_most_recent() == p.index:
                    break
            if p.status != PREFILLING:
                continue
            inserts.append(Insert(p.request.id, p.slot, p.prefilled, length))
            state.insert(p, p.slot, length)
            budget -= length
        return inserts

    def _admit(self, budget: int) -> list[Insert]:
        state = self.state
        k = state.step
        inserts = []
        while self.waiting and self.free_slots and budget > 0:
            p = state.progress[self.waiting[0]]
            if p.request.arrival_step - self.offset > k or p.ready_from > k:
                break
            length = min(p.prefill_len, budget)
            if blocks_for(length, state.block_size) > self.config.num_kv_blocks - state.kv_blocks:
                break
            self.waiting.popleft()
            if self.arrival[p.index] < 0:
                self.arrival[p.index] = p.request.arrival_step - self.offset
            slot = heapq.heappop(self.free_slots)
            inserts.append(Insert(p.request.id, slot, 0, length))
            state.insert(p, slot, length)
            budget -= length
        return inserts
