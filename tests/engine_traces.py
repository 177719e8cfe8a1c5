"""Small hand-made traces that put the engine's hazards on specific steps."""

from __future__ import annotations

from fdoverlap_cli.trace import Insert, Request, Step, Trace, TraceConfig

CONFIG = TraceConfig(
    max_num_seqs=4, max_model_len=64, block_size=16, num_kv_blocks=64, max_num_batched_tokens=64, eos_token_id=0
)


def _trace(requests: list[Request], steps: list[Step], name: str) -> Trace:
    return Trace(config=CONFIG, requests=tuple(requests), steps=tuple(steps), meta={"source": f"test:{name}"})


def drain_then_arrival() -> Trace:
    """All slots finish at step 2, nothing runs on steps 3-5, a new request arrives at step 6."""
    requests = [Request("r0", 5, 3), Request("r1", 4, 2), Request("r2", 6, 4, arrival_step=6)]
    steps = [Step(insert=(Insert("r0", 0, 0, 5), Insert("r1", 1, 0, 4)))] + [Step()] * 5
    steps += [Step(insert=(Insert("r2", 0, 0, 6),))] + [Step()] * 3
    return _trace(requests, steps, "drain_then_arrival")


def arrival_right_after_drain() -> Trace:
    """Everything finishes at step 1 and a request is inserted at step 2: the late flag must not skip it."""
    requests = [Request("r0", 3, 2), Request("r1", 5, 3, arrival_step=2)]
    steps = [Step(insert=(Insert("r0", 0, 0, 3),)), Step(), Step(insert=(Insert("r1", 1, 0, 5),)), Step(), Step()]
    return _trace(requests, steps, "arrival_right_after_drain")


def preemption() -> Trace:
    """r1 is preempted at step 3 after 3 tokens and resumes in slot 2 at step 4; r2 takes slot 1 at step 4."""
    requests = [Request("r0", 4, 6), Request("r1", 4, 6), Request("r2", 5, 2)]
    steps = [
        Step(insert=(Insert("r0", 0, 0, 4), Insert("r1", 1, 0, 4))),
        Step(),
        Step(),
        Step(preempt=(1,)),
        Step(insert=(Insert("r1", 2, 0, 7), Insert("r2", 1, 0, 5))),
        Step(),
        Step(),
    ]
    return _trace(requests, steps, "preemption")


def chunked_prefill() -> Trace:
    """r0's 10-token prompt in chunks of 4, 4 and 2 (its first token comes at step 2); r1 decodes alongside."""
    requests = [Request("r0", 10, 3), Request("r1", 3, 5)]
    steps = [
        Step(insert=(Insert("r1", 1, 0, 3), Insert("r0", 0, 0, 4))),
        Step(insert=(Insert("r0", 0, 4, 4),)),
        Step(insert=(Insert("r0", 0, 8, 2),)),
        Step(),
        Step(),
    ]
    return _trace(requests, steps, "chunked_prefill")


ALL = {
    "drain_then_arrival": drain_then_arrival,
    "arrival_right_after_drain": arrival_right_after_drain,
    "preemption": preemption,
    "chunked_prefill": chunked_prefill,
}
