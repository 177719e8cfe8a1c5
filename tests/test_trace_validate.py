"""The validator: one broken trace per rule (message = JSON path + reason), and a cross-check of
its verdict against the naive reference on randomly broken scheduled traces."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.trace import validate
from fdoverlap_cli.trace.format import Request, TraceConfig, trace_from_dict, trace_to_dict
from fdoverlap_cli.trace.scheduler import schedule
from tests.test_trace_scheduler import reference_violation, workloads

# r0: prompt 6, output 3, in slot 0: prefill at step 0, decodes at 1 and 2 (finishes at 2).
# r1: prompt 10, output 2, arrives at 1, in slot 1: chunks [0, 8) at 1 and [8, 10) at 2, decodes at 3.
BASE: dict[str, Any] = {
    "format": "fdoverlap-trace",
    "version": 1,
    "config": {
        "max_num_seqs": 2,
        "max_model_len": 32,
        "block_size": 4,
        "num_kv_blocks": 16,
        "max_num_batched_tokens": 16,
    },
    "requests": [
        {"id": "r0", "prompt_len": 6, "output_len": 3},
        {"id": "r1", "prompt_len": 10, "output_len": 2, "arrival_step": 1},
    ],
    "steps": [
        {"insert": [{"request": "r0", "slot": 0, "start": 0, "len": 6}]},
        {"insert": [{"request": "r1", "slot": 1, "start": 0, "len": 8}]},
        {"insert": [{"request": "r1", "slot": 1, "start": 8, "len": 2}]},
        {},
    ],
}


def _broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets doc[path] (path like 'steps.1.insert.0.slot')."""

    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return change


def _step(k: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return _set(f"steps.{k}", fields)


def _insert(request: str, slot: int, start: int, length: int) -> dict[str, Any]:
    return {"request": request, "slot": slot, "start": start, "len": length}


def test_the_base_trace_is_valid() -> None:
    validate(trace_from_dict(BASE))
    assert reference_violation(trace_from_dict(BASE)) is None


def test_a_preempted_request_resumes_with_prompt_plus_generated() -> None:
    # r1 is preempted at step 3 (its decode step) and re-prefills 10 + 1 tokens at step 4 in slot 0.
    doc = _broken(_step(3, preempt=[1]))
    doc["steps"].append({"insert": [_insert("r1", 0, 0, 11)]})
    validate(trace_from_dict(doc))
    assert reference_violation(trace_from_dict(doc)) is None


CASES = [
    ("slot occupied", _set("steps.1.insert.0.slot", 0),
     "steps[1].insert[0].slot: slot 0 still holds request r0 until step 2"),
    ("slot out of range", _set("steps.1.insert.0.slot", 5),
     "steps[1].insert[0].slot: slot 5 out of range [0, 2)"),
    ("chunk not continuous", _set("steps.2.insert.0.start", 7),
     "steps[2].insert[0].start: chunk of r1 starts at 7 but its prefill has reached 8"),
    ("first chunk not at 0", _set("steps.1.insert.0.start", 2),
     "steps[1].insert[0].start: chunk of r1 starts at 2 but its prefill has reached 0"),
    ("chunk in another slot", _step(2, insert=[_insert("r1", 0, 8, 2)]),
     "steps[2].insert[0].slot: r1's prefill is in slot 1, not slot 0"),
    ("chunk past the prefill", _set("steps.2.insert.0.len", 3),
     "steps[2].insert[0].len: chunk of r1 ends at 11, beyond its prefill of 10 tokens"),
    ("chunk longer than max_model_len", _set("steps.2.insert.0.len", 40),
     "steps[2].insert[0].len: chunk length 40 exceeds max_model_len 32"),
    ("request longer than max_model_len", _set("requests.0.prompt_len", 30),
     "requests[0]: prompt_len 30 + output_len 3 exceed max_model_len 32"),
    ("token budget", _set("config.max_num_batched_tokens", 8),
     "steps[1]: 9 tokens exceed max_num_batched_tokens 8 (8 prefill, 1 decode)"),
    ("KV budget", _set("config.num_kv_blocks", 4),
     "steps[2]: KV blocks 5 exceed num_kv_blocks 4"),
    ("duplicate id", _set("requests.1.id", "r0"),
     "requests[1].id: duplicate id 'r0' (first at requests[0])"),
    ("unknown request", _set("steps.1.insert.0.request", "rx"),
     "steps[1].insert[0].request: unknown request 'rx'"),
    ("before arrival", _set("requests.1.arrival_step", 2),
     "steps[1].insert[0].request: r1 arrives at step 2"),
    ("never finishes", lambda d: d["steps"].pop(),
     "requests[1]: request r1 never finishes: 1 of 2 tokens by the last step"),
    ("never inserted", lambda d: d["requests"].append({"id": "r2", "prompt_len": 4, "output_len": 5}),
     "requests[2]: request r2 never finishes: 0 of 5 tokens by the last step"),
    ("preempt an empty slot", _step(0, insert=BASE["steps"][0]["insert"], preempt=[1]),
     "steps[0].preempt[0]: slot 1 is empty: nothing to preempt"),
    ("preempt a finished slot", _step(3, preempt=[0]),
     "steps[3].preempt[0]: slot 0 is empty: nothing to preempt"),
    ("preempt out of range", _step(3, preempt=[2]),
     "steps[3].preempt[0]: slot 2 out of range [0, 2)"),
    ("preempt twice", _step(3, preempt=[1, 1]),
     "steps[3].preempt[1]: slot 1 is already preempted at this step"),
    ("re-insert at the preemption step", _step(3, preempt=[1], insert=[_insert("r1", 0, 0, 11)]),
     "steps[3].insert[0].request: r1 is preempted at this step; it can be re-inserted from step 4"),
    ("insert into a slot freed at this step", lambda d: (
        d["requests"].append({"id": "r2", "prompt_len": 2, "output_len": 1}),
        d["steps"].__setitem__(3, {"preempt": [1], "insert": [_insert("r2", 1, 0, 2)]})),
     "steps[3].insert[0].slot: slot 1 is freed by a preemption at this step; it is free from step 4"),
    ("insert a decoding request", _step(2, insert=[_insert("r1", 1, 8, 2), _insert("r0", 0, 6, 1)]),
     "steps[2].insert[1].request: r0 finished its prefill at step 0 and decodes in slot 0"),
    ("insert a finished request", _step(3, insert=[_insert("r0", 0, 0, 6)]),
     "steps[3].insert[0].request: r0 already finished at step 2"),
    ("two chunks in one step", _step(1, insert=[_insert("r1", 1, 0, 4), _insert("r1", 1, 4, 4)]),
     "steps[1].insert[1].request: r1 already has a chunk at this step"),
    ("no requests", lambda d: (d.__setitem__("requests", []), d.__setitem__("steps", [])),
     "requests: a trace needs at least one request"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_names_the_json_path_and_the_reason(change: Callable[[dict[str, Any]], None], message: str) -> None:
    trace = trace_from_dict(_broken(change))
    with pytest.raises(InputError) as e:
        validate(trace)
    assert str(e.value) == message
    assert reference_violation(trace) is not None


def test_a_slot_between_prefill_chunks_stays_taken() -> None:
    # r1's first chunk at step 1 leaves its slot taken at step 2, even with no chunk there.
    doc = _broken(_step(2, insert=[_insert("r0", 1, 0, 1)]))
    doc["steps"][0] = {}
    doc["requests"][0]["arrival_step"] = 0
    with pytest.raises(
        InputError, match=r"steps\[2\]\.insert\[0\]\.slot: slot 1 holds request r1 \(its prefill is at 8 of 10"
    ):
        validate(trace_from_dict(doc))


def test_a_chunk_past_max_model_len_is_named() -> None:
    doc = copy.deepcopy(BASE)
    doc["config"]["max_model_len"] = 16
    doc["requests"][1] = {"id": "r1", "prompt_len": 10, "output_len": 2, "arrival_step": 1}
    doc["steps"][2]["insert"][0]["len"] = 9
    with pytest.raises(
        InputError, match=r"steps\[2\]\.insert\[0\]\.len: chunk of r1 ends at 17, beyond max_model_len 16"
    ):
        validate(trace_from_dict(doc))


def _mutate(doc: dict[str, Any], data: st.DataObject) -> None:
    steps = doc["steps"]
    inserts = [(k, j) for k, s in enumerate(steps) for j in range(len(s.get("insert", [])))]
    kind = data.draw(st.sampled_from(["start", "len", "slot", "request", "drop", "preempt", "unpreempt",
                                      "drop step", "repeat step", "config", "request field"]))  # fmt: skip
    if kind in ("start", "len", "slot", "request", "drop") and inserts:
        k, j = data.draw(st.sampled_from(inserts))
        ins = steps[k]["insert"][j]
        if kind == "start":
            ins["start"] = max(0, ins["start"] + data.draw(st.sampled_from([-1, 1])))
        elif kind == "len":
            ins["len"] = max(1, ins["len"] + data.draw(st.sampled_from([-1, 1])))
        elif kind == "slot":
            ins["slot"] = data.draw(st.integers(0, doc["config"]["max_num_seqs"]))
        elif kind == "request":
            ins["request"] = data.draw(st.sampled_from([r["id"] for r in doc["requests"]]))
        else:
            del steps[k]["insert"][j]
    elif kind == "preempt" and steps:
        k = data.draw(st.integers(0, len(steps) - 1))
        steps[k].setdefault("preempt", []).append(data.draw(st.integers(0, doc["config"]["max_num_seqs"])))
    elif kind == "unpreempt":
        preempts = [k for k, s in enumerate(steps) if s.get("preempt")]
        if preempts:
            steps[data.draw(st.sampled_from(preempts))]["preempt"].pop()
    elif kind == "drop step" and steps:
        del steps[data.draw(st.integers(0, len(steps) - 1))]
    elif kind == "repeat step" and steps:
        k = data.draw(st.integers(0, len(steps) - 1))
        steps.insert(k, copy.deepcopy(steps[k]))
    elif kind == "config":
        key = data.draw(st.sampled_from(["max_model_len", "num_kv_blocks", "max_num_batched_tokens", "max_num_seqs"]))
        doc["config"][key] = max(1, doc["config"][key] - data.draw(st.integers(1, 3)))
    elif kind == "request field":
        r = data.draw(st.sampled_from(doc["requests"]))
        key = data.draw(st.sampled_from(["prompt_len", "output_len", "arrival_step"]))
        r[key] = max(1, r[key] + data.draw(st.sampled_from([-1, 1])))


@settings(max_examples=400, deadline=None)
@given(workloads(), st.data())
def test_validator_agrees_with_the_reference_on_broken_traces(
    workload: tuple[list[Request], TraceConfig], data: st.DataObject
) -> None:
    requests, config = workload
    doc = trace_to_dict(schedule(requests, config).to_trace(config, {}))
    for _ in range(data.draw(st.integers(1, 2))):
        _mutate(doc, data)
    try:
        trace = trace_from_dict(doc)
    except InputError:
        return  # structurally broken (e.g. max_model_len below 2): format's business
    expected = reference_violation(trace)
    if expected is None:
        validate(trace)
    else:
        with pytest.raises(InputError):
            validate(trace)
