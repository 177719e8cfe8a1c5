"""The two models of the slots agree: trace/batch_state (validator, scheduler) and engine/bookkeeping (the runner).

For every step of a trace both must count the same tokens in the batch and name the same (slot,
request) pairs as the ones that emit a token: the runner packs and attributes by the second, the
trace's rules are the first.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fdoverlap_cli.engine.bookkeeping import Bookkeeping
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.resources import traces_dir
from fdoverlap_cli.trace import Trace, load_trace
from fdoverlap_cli.trace.batch_state import FINISHED, BatchState
from fdoverlap_cli.trace.scheduler import SchedulerOptions
from fdoverlap_cli.trace.synth import LengthDist, SynthSpec, synth_trace


def _per_step_from_batch_state(trace: Trace) -> list[tuple[int, set[tuple[int, int]]]]:
    """(tokens, {(slot, request)} that emit a token) of each step, by the trace's state machine."""
    index = trace.request_index
    state = BatchState(trace.config, trace.requests)
    before = [0] * len(trace.requests)
    out = []
    for k, step in enumerate(trace.steps):
        state.advance()
        for slot in step.preempt:
            state.preempt(slot)
        for ins in step.insert:
            state.insert(state.progress[index[ins.request]], ins.slot, ins.length)
        producers = set()
        for p in state.progress:
            total = p.request.output_len if p.status == FINISHED else p.generated_by(k)
            if total > before[p.index]:
                assert total == before[p.index] + 1, (k, p.request.id)
                producers.add((p.slot, p.index))
            before[p.index] = total
        out.append((state.step_tokens(), producers))
    return out


def _per_step_from_bookkeeping(trace: Trace) -> list[tuple[int, set[tuple[int, int]]]]:
    """The same, as the runner's host bookkeeping plans each step."""
    book = Bookkeeping(trace, vocab_size=2)
    tokens = np.zeros(trace.config.max_num_seqs, dtype=np.int64)
    out = []
    for k, step in enumerate(trace.steps):
        book.apply_step(step)
        plan = book.launch(k)
        book.record_tokens(plan.producers, tokens)
        out.append((plan.token_num, set(plan.producers)))
    return out


def _assert_agree(trace: Trace) -> None:
    for k, (a, b) in enumerate(zip(_per_step_from_batch_state(trace), _per_step_from_bookkeeping(trace), strict=True)):
        assert a == b, f"step {k}: batch_state {a}, bookkeeping {b}"


@pytest.mark.parametrize("path", sorted(traces_dir().glob("*.json")), ids=lambda p: p.stem)
def test_the_bundled_traces(path):
    _assert_agree(load_trace(path))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.integers(1, 10),
    prompt=st.tuples(st.integers(1, 40), st.integers(0, 40)),
    output=st.tuples(st.integers(1, 16), st.integers(0, 16)),
    slots=st.integers(1, 5),
    block=st.sampled_from([4, 8, 16]),
    budget=st.integers(8, 64),
    kv_blocks=st.one_of(st.none(), st.integers(4, 40)),  # few blocks: preemptions
    arrival=st.sampled_from([0.0, 0.5, 2.0]),
    seed=st.integers(0, 1000),
)
def test_synthetic_traces(requests, prompt, output, slots, block, budget, kv_blocks, arrival, seed):
    scheduler = SchedulerOptions(
        max_num_seqs=slots, block_size=block, num_kv_blocks=kv_blocks, max_num_batched_tokens=max(budget, slots)
    )
    spec = SynthSpec(
        requests=requests,
        prompt_len=LengthDist("uniform", prompt[0], prompt[0] + prompt[1]),
        output_len=LengthDist("uniform", output[0], output[0] + output[1]),
        arrival_rate=arrival,
        seed=seed,
        scheduler=scheduler,
    )
    try:
        trace = synth_trace(spec)
    except FdoError:  # budgets no schedule fits (a request larger than the KV cache)
        assume(False)
    _assert_agree(trace)
