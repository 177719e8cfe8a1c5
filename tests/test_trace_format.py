"""The trace file: byte-identical round trips, and structural errors named by their JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.trace import load_trace, save_trace
from fdoverlap_cli.trace.format import Request, dumps, trace_from_dict
from fdoverlap_cli.trace.scheduler import SchedulerOptions
from fdoverlap_cli.trace.synth import SynthSpec, parse_lengths, synth_trace
from tests.test_trace_validate import BASE


def test_save_load_save_is_byte_identical(tmp_path: Path) -> None:
    spec = SynthSpec(requests=12, arrival_rate=0.5, seed=3, scheduler=SchedulerOptions(num_kv_blocks=20))
    trace = synth_trace(spec)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_trace(trace, first)
    loaded = load_trace(first)
    save_trace(loaded, second)
    assert first.read_bytes() == second.read_bytes()
    assert loaded == trace


def test_prompt_token_ids_round_trip(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["requests"][0]["prompt_token_ids"] = [5, 4, 3, 2, 1, 0]
    trace = trace_from_dict(doc)
    assert trace.requests[0] == Request("r0", 6, 3, 0, (5, 4, 3, 2, 1, 0))
    save_trace(trace, tmp_path / "t.json")
    assert load_trace(tmp_path / "t.json") == trace
    assert dumps(load_trace(tmp_path / "t.json")) == dumps(trace)


def test_the_text_has_one_request_and_one_step_per_line() -> None:
    text = dumps(trace_from_dict(BASE))
    lines = text.splitlines()
    assert '    {"id":"r1","prompt_len":10,"output_len":2,"arrival_step":1}' in lines
    assert '    {"insert":[{"request":"r1","slot":1,"start":8,"len":2}]},' in lines
    assert lines[-3:] == ["    {}", "  ]", "}"]


def _doc(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "$: expected an object, got an array"),
        (_doc("format", "other"), "format: expected 'fdoverlap-trace', got a string \"other\""),
        (_doc("version", _DELETE), "$: missing required field 'version'"),
        (_doc("version", 2), "version: unknown version 2 (this fdoverlap reads 1)"),
        (_doc("version", "1"), "version: expected an integer, got a string \"1\""),
        (_doc("steps", _DELETE), "$: missing required field 'steps'"),
        (_doc("extra", 1), "extra: unknown field"),
        (_doc("config.max_num_seqs", _DELETE), "config: missing required field 'max_num_seqs'"),
        (_doc("config.block_size", "16"), "config.block_size: expected an integer, got a string \"16\""),
        (_doc("config.max_num_seqs", True), "config.max_num_seqs: expected an integer, got true"),
        (_doc("config.num_kv_blocks", 0), "config.num_kv_blocks: must be at least 1, got 0"),
        (_doc("requests", {}), "requests: expected an array, got an object"),
        (_doc("requests.1.output_len", 0), "requests[1].output_len: must be at least 1, got 0"),
        (_doc("requests.1.id", ""), "requests[1].id: must not be empty"),
        (_doc("requests.0.prompt_len", _DELETE), "requests[0]: missing required field 'prompt_len'"),
        (_doc("requests.0.prompt_token_ids", [1, 2]), "requests[0].prompt_token_ids: has 2 ids but prompt_len is 6"),
        (_doc("steps.0.insert.0.len", 1.5), "steps[0].insert[0].len: expected an integer, got a number 1.5"),
        (_doc("steps.0.insert.0.slot", None), "steps[0].insert[0].slot: expected an integer, got null"),
        (_doc("steps.0.insert.0.request", 0),
         "steps[0].insert[0].request: expected a request id (string), got an integer 0"),
        (_doc("steps.2.insert", {}), "steps[2].insert: expected an array, got an object"),
        (_doc("steps.0.chunk", []), "steps[0].chunk: unknown field"),
        (_doc("steps.3.preempt", [-1]), "steps[3].preempt[0]: slots are >= 0, got -1"),
        (_doc("meta", []), "meta: expected an object, got an array"),
    ],
)  # fmt: skip
def test_structural_errors_name_the_json_path(doc: Any, message: str) -> None:
    with pytest.raises(InputError) as e:
        trace_from_dict(doc)
    assert str(e.value) == message


def test_load_errors_start_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    doc = _doc("steps.1.insert.0.slot", 0)
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        load_trace(bad)
    assert str(e.value) == f"{bad}: steps[1].insert[0].slot: slot 0 still holds request r0 until step 2"
    assert load_trace(bad, check=False).steps[1].insert[0].slot == 0
    bad.write_text('{"format": "fdoverlap-trace",\n "version": }')
    with pytest.raises(InputError, match=r"bad\.json:2:13: invalid JSON"):
        load_trace(bad)
    with pytest.raises(InputError, match="no such trace file"):
        load_trace(tmp_path / "missing.json")


def test_length_specs_print_back_to_themselves() -> None:
    for text in ("64", "16..64", "normal:48,8,16..64", "lognormal:300.5,120,16..2000"):
        assert str(parse_lengths(text, "--prompt-len")) == text
