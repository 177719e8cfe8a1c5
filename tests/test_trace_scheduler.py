"""The scheduler simulation: its invariants as properties, checked by a naive reference of the trace rules.

`reference_violation` re-implements docs/trace-format.md's rules the slow, obvious way (every
slot at every step), independently of `BatchState`, so that a scheduled trace passing it is
evidence, not a tautology. test_trace_validate.py reuses it to cross-check the validator.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.trace import validate
from fdoverlap_cli.trace.format import Request, Trace, TraceConfig
from fdoverlap_cli.trace.scheduler import SchedulerOptions, schedule
from fdoverlap_cli.trace.validate import check_steps


def reference_violation(trace: Trace) -> str | None:
    """The first rule `trace` breaks, in words, or None: per step, per slot, no cleverness."""
    cfg = trace.config
    reqs = {}
    for r in trace.requests:
        if r.id in reqs:
            return "duplicate id"
        if r.prompt_len + r.output_len > cfg.max_model_len:
            return "request longer than max_model_len"
        reqs[r.id] = r
    if not reqs:
        return "no requests"
    state = {
        rid: {"phase": "waiting", "slot": None, "prefill": r.prompt_len, "done": 0, "gen": 0, "cache": 0,
              "ready": r.arrival_step, "finish": None}
        for rid, r in reqs.items()
    }  # fmt: skip
    owner: list[str | None] = [None] * cfg.max_num_seqs
    free_at = [0] * cfg.max_num_seqs
    for k, step in enumerate(trace.steps):
        for s in range(cfg.max_num_seqs):
            rid = owner[s]
            if rid is not None and state[rid]["phase"] == "finished" and state[rid]["finish"] < k:
                owner[s] = None
        for s in step.preempt:
            if not 0 <= s < cfg.max_num_seqs or owner[s] is None:
                return f"step {k}: preempt of empty or unknown slot {s}"
            rid = owner[s]
            owner[s] = None
            free_at[s] = k + 1
            x = state[rid]
            x.update(phase="waiting", slot=None, done=0, cache=0, ready=k + 1, prefill=reqs[rid].prompt_len + x["gen"])
        tokens = 0
        ran = set()
        for ins in step.insert:
            if ins.request not in reqs:
                return f"step {k}: unknown request"
            x = state[ins.request]
            if ins.request in ran or x["phase"] in ("decoding", "decode-next", "finished"):
                return f"step {k}: {ins.request} inserted twice or after its prefill"
            if k < x["ready"]:
                return f"step {k}: {ins.request} inserted before it may be"
            if not 0 <= ins.slot < cfg.max_num_seqs:
                return f"step {k}: slot out of range"
            if x["phase"] == "prefilling":
                if ins.slot != x["slot"]:
                    return f"step {k}: chunk in another slot"
            elif owner[ins.slot] is not None or free_at[ins.slot] > k:
                return f"step {k}: slot {ins.slot} not free"
            if ins.start != x["done"]:
                return f"step {k}: discontinuous chunk"
            end = ins.start + ins.length
            if end > x["prefill"] or end > cfg.max_model_len or ins.length > cfg.max_model_len:
                return f"step {k}: chunk past the prefill"
            owner[ins.slot] = ins.request
            x.update(slot=ins.slot, done=end, cache=end, phase="prefilling")
            tokens += ins.length
            ran.add(ins.request)
            if end == x["prefill"]:
                x["gen"] += 1
                x["phase"] = "decode-next"
                if x["gen"] == reqs[ins.request].output_len:
                    x.update(phase="finished", finish=k)
        for rid in owner:
            if rid is not None and state[rid]["phase"] == "decoding":
                x = state[rid]
                x["gen"] += 1
                x["cache"] += 1
                tokens += 1
                if x["gen"] == reqs[rid].output_len:
                    x.update(phase="finished", finish=k)
        for x in state.values():
            if x["phase"] == "decode-next":
                x["phase"] = "decoding"
        if tokens > cfg.max_num_batched_tokens:
            return f"step {k}: token budget"
        blocks = sum(math.ceil(state[rid]["cache"] / cfg.block_size) for rid in owner if rid is not None)
        if blocks > cfg.num_kv_blocks:
            return f"step {k}: KV blocks"
    for rid, x in state.items():
        if x["phase"] != "finished":
            return f"{rid} never finishes"
    return None


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Request], TraceConfig]:
    slots = draw(st.integers(1, 6))
    block_size = draw(st.integers(1, 8))
    n = draw(st.integers(1, 12))
    requests = [
        Request(
            id=f"q{i}",
            prompt_len=draw(st.integers(1, 40)),
            output_len=draw(st.integers(1, 20)),
            arrival_step=draw(st.integers(0, 30)),
        )
        for i in range(n)
    ]
    longest = max(r.prompt_len + r.output_len for r in requests)
    peak = max(math.ceil((r.prompt_len + r.output_len - 1) / block_size) for r in requests)
    config = SchedulerOptions(
        max_num_seqs=slots,
        max_model_len=longest + draw(st.integers(0, 5)),
        block_size=block_size,
        num_kv_blocks=draw(st.integers(peak, peak * slots + 5)),
        max_num_batched_tokens=draw(st.integers(slots, 80)),
    ).config()
    return requests, config


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_scheduled_traces_obey_every_rule(workload: tuple[list[Request], TraceConfig]) -> None:
    requests, config = workload
    result = schedule(requests, config)
    trace = result.to_trace(config, {})
    assert reference_violation(trace) is None
    validate(trace)
    assert sum(len(s.preempt) for s in trace.steps) == result.preemptions


@settings(max_examples=200, deadline=None)
@given(workloads())
def test_every_request_is_served_whole(workload: tuple[list[Request], TraceConfig]) -> None:
    requests, config = workload
    trace = schedule(requests, config).to_trace(config, {})
    holder: dict[int, str] = {}
    preempted = dict.fromkeys((r.id for r in requests), 0)
    prefills: dict[str, list[int]] = {r.id: [] for r in requests}  # covered length of each prefill
    for step in trace.steps:
        for slot in step.preempt:
            preempted[holder[slot]] += 1
        for ins in step.insert:
            holder[ins.slot] = ins.request
            if ins.start == 0:
                prefills[ins.request].append(ins.length)
            else:
                assert prefills[ins.request][-1] == ins.start
                prefills[ins.request][-1] += ins.length
    for r in requests:
        lengths = prefills[r.id]
        # One prefill, plus one re-prefill (prompt + tokens generated so far) per preemption.
        assert len(lengths) == 1 + preempted[r.id]
        assert lengths[0] <= r.prompt_len
        assert all(length < r.prompt_len + r.output_len for length in lengths)
        assert r.prompt_len <= lengths[-1]


@settings(max_examples=200, deadline=None)
@given(workloads())
def test_no_step_is_idle_and_admission_is_fifo(workload: tuple[list[Request], TraceConfig]) -> None:
    requests, config = workload
    trace = schedule(requests, config).to_trace(config, {})
    load = check_steps(trace)
    assert all(load.tokens(k) > 0 for k in range(len(trace.steps)))
    first_seen: dict[str, int] = {}
    for k, step in enumerate(trace.steps):
        for ins in step.insert:
            first_seen.setdefault(ins.request, k)
    order = sorted(range(len(requests)), key=lambda i: (requests[i].arrival_step, i))
    admissions = [first_seen[requests[i].id] for i in order]
    # FIFO: first admissions follow arrival order (ties: input order).
    assert admissions == sorted(admissions)
    # Arrival steps as scheduled never come after a request's first insert.
    for r in trace.requests:
        assert r.arrival_step <= first_seen[r.id]


def test_kv_pressure_preempts_and_resumes() -> None:
    requests = [Request(f"r{i}", prompt_len=30, output_len=40) for i in range(6)]
    config = SchedulerOptions(
        max_num_seqs=4, max_model_len=70, block_size=8, num_kv_blocks=20, max_num_batched_tokens=64
    ).config()
    result = schedule(requests, config)
    trace = result.to_trace(config, {})
    assert result.preemptions > 0
    assert reference_violation(trace) is None
    resumed = {
        ins.request for step in trace.steps for ins in step.insert if ins.start == 0 and ins.length > 30
    }  # a resumed prefill is the prompt plus generated tokens
    assert resumed


def test_long_prompts_are_chunked_by_the_token_budget() -> None:
    requests = [Request("a", prompt_len=100, output_len=3), Request("b", prompt_len=10, output_len=3)]
    config = SchedulerOptions(max_num_seqs=2, max_model_len=128, block_size=16, max_num_batched_tokens=32).config()
    trace = schedule(requests, config).to_trace(config, {})
    chunks_of_a = [ins for step in trace.steps for ins in step.insert if ins.request == "a"]
    assert [(c.start, c.length) for c in chunks_of_a] == [(0, 32), (32, 32), (64, 32), (96, 4)]
    assert reference_violation(trace) is None


def test_idle_stretches_are_cut_and_arrivals_shift() -> None:
    requests = [Request("a", 4, 2, arrival_step=0), Request("b", 4, 2, arrival_step=1000)]
    config = SchedulerOptions(max_num_seqs=1, max_model_len=8, block_size=4, max_num_batched_tokens=8).config()
    result = schedule(requests, config)
    assert len(result.steps) == 4  # a: prefill + 1 decode; b: prefill + 1 decode
    assert result.requests[1].arrival_step == 2
    assert result.idle_steps_cut == 998


def test_scheduling_is_deterministic() -> None:
    requests = [Request(f"r{i}", 5 + 7 * i % 23, 3 + 5 * i % 11, arrival_step=i // 3) for i in range(40)]
    config = SchedulerOptions(
        max_num_seqs=5, max_model_len=64, block_size=4, num_kv_blocks=30, max_num_batched_tokens=16
    ).config()
    assert schedule(requests, config) == schedule(requests, config)


def _config(**options: int) -> TraceConfig:
    return SchedulerOptions(**options).config()


@pytest.mark.parametrize(
    ("config", "requests", "message"),
    [
        (_config(max_num_seqs=4, max_model_len=64, block_size=16, max_num_batched_tokens=2),
         [Request("a", 4, 4)], "max_num_batched_tokens 2 is below max_num_seqs 4"),
        (_config(max_num_seqs=1, max_model_len=64, block_size=16, max_num_batched_tokens=0),
         [Request("a", 4, 4)], "max_num_batched_tokens must be at least 1"),
        (_config(max_num_seqs=1, max_model_len=64, block_size=4, num_kv_blocks=3, max_num_batched_tokens=8),
         [Request("big", 10, 5)], "request big alone needs 4 KV blocks"),
        (_config(max_num_seqs=1, max_model_len=8, block_size=4, max_num_batched_tokens=8),
         [Request("a", 6, 4)], "request a: prompt 6 + output 4 tokens exceed max_model_len 8"),
        (_config(max_num_seqs=1, max_model_len=8, block_size=4, max_num_batched_tokens=8),
         [Request("a", 2, 2), Request("a", 2, 2)], "duplicate request id 'a'"),
        (_config(max_num_seqs=1, max_model_len=8, block_size=4, max_num_batched_tokens=8), [], "no requests"),
    ],
)  # fmt: skip
def test_impossible_configurations_are_rejected(config: TraceConfig, requests: list[Request], message: str) -> None:
    with pytest.raises(FdoError, match=re.escape(message)):
        schedule(requests, config)
