"""The trace format: what the engine handed the worker at each scheduler step.

A trace is JSON with a `format` name and a `version`; `docs/trace-format.md` documents it.
This module holds the data model and its JSON codec. Decoding checks structure and types and
names the JSON path of the first problem; `validate.py` checks what the replay relies on
(slot occupancy, chunk continuity, budgets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdoverlap_cli.errors import InputError

FORMAT_NAME = "fdoverlap-trace"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_INT = 2**62  # the largest count, length, step or token id a trace may hold (int64 with room to add)
MAX_SIZE = 2**31 - 1  # the largest config size: the step buffers and ops hold lengths and counts as int32
SIZE_FIELDS = ("max_num_seqs", "max_model_len", "block_size", "num_kv_blocks", "max_num_batched_tokens")


def config_maximum(name: str) -> int:
    """The largest value config field `name` may hold."""
    return MAX_SIZE if name in SIZE_FIELDS else MAX_INT


def too_large(value: int, maximum: int) -> str:
    """Why `value` is out of range, for an error message."""
    return f"{value} is too large (at most " + ("2^62)" if maximum == MAX_INT else f"{maximum}: int32 buffers)")


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """What the runner needs to size its buffers, and the scheduler's budgets."""

    max_num_seqs: int  # slots in the batch (FastDeploy's max_num_seqs)
    max_model_len: int  # prompt + output tokens of one request, at most
    block_size: int  # tokens per KV cache block
    num_kv_blocks: int  # KV cache blocks in all: the budget that forces preemption
    max_num_batched_tokens: int  # tokens of one step, at most (prefill chunks + decodes)
    eos_token_id: int = 0  # the end token written as a request's last token
    seed: int = 0  # derives prompt token ids that the trace does not list


@dataclass(frozen=True, slots=True)
class Request:
    """One request: its prompt and how many tokens the replay generates for it."""

    id: str
    prompt_len: int
    output_len: int  # the replay stops the request after this many tokens
    arrival_step: int = 0  # the first step the scheduler could admit it
    prompt_token_ids: tuple[int, ...] | None = None  # None: derived from config.seed


@dataclass(frozen=True, slots=True)
class Insert:
    """A prefill chunk of `request` into `slot`: tokens [start, start + length) of its prefill.

    The prefill of a request resumed after preemption is its prompt plus the tokens it had
    generated; chunks of one request follow each other in one slot with no gap in `start`.
    """

    request: str
    slot: int
    start: int
    length: int


@dataclass(frozen=True, slots=True)
class Step:
    """One scheduler step: the chunks inserted and the slots preempted before it runs."""

    insert: tuple[Insert, ...] = ()
    preempt: tuple[int, ...] = ()  # slots whose request is evicted at this step


@dataclass(frozen=True, slots=True)
class Trace:
    """A whole trace. `requests` keep file order; `request_index` maps id -> position."""

    config: TraceConfig
    requests: tuple[Request, ...]
    steps: tuple[Step, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def request_index(self) -> dict[str, int]:
        return {r.id: i for i, r in enumerate(self.requests)}


# --------------------------------------------------------------------------- decoding


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    # bool is an int in Python; JSON true/false is never a valid count or slot.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InputError(where, f"expected {what}, got {json.dumps(value)}")
    if not isinstance(value, kind):
        raise InputError(where, f"expected {what}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    name = {dict: "an object", list: "an array", str: "a string", float: "a number", int: "an integer"}
    text = json.dumps(value) if isinstance(value, (int, float, str)) else ""
    return f"{name.get(type(value), type(value).__name__)} {text}".strip()


def _int(
    obj: dict, key: str, where: str, *, minimum: int = 0, maximum: int = MAX_INT, default: int | None = None
) -> int:
    if key not in obj:
        if default is not None:
            return default
        raise InputError(where, f"missing required field '{key}'")
    value = _expect(obj[key], int, f"{where}.{key}", "an integer")
    if value < minimum:
        raise InputError(f"{where}.{key}", f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise InputError(f"{where}.{key}", too_large(value, maximum))
    return value


def _object(value: Any, where: str) -> dict:
    return _expect(value, dict, where, "an object")


def _array(value: Any, where: str) -> list:
    return _expect(value, list, where, "an array")


def _no_unknown(obj: dict, known: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in known:
            raise InputError(f"{where}.{key}" if where else key, "unknown field")


def config_from_dict(obj: Any, where: str = "config") -> TraceConfig:
    obj = _object(obj, where)
    _no_unknown(obj, TraceConfig.__slots__, where)

    def field(key: str, minimum: int = 0, default: int | None = None) -> int:
        return _int(obj, key, where, minimum=minimum, maximum=config_maximum(key), default=default)

    return TraceConfig(
        max_num_seqs=field("max_num_seqs", minimum=1),
        max_model_len=field("max_model_len", minimum=2),
        block_size=field("block_size", minimum=1),
        num_kv_blocks=field("num_kv_blocks", minimum=1),
        max_num_batched_tokens=field("max_num_batched_tokens", minimum=1),
        eos_token_id=field("eos_token_id", default=0),
        seed=field("seed", default=0),
    )


def request_from_dict(obj: Any, where: str) -> Request:
    obj = _object(obj, where)
    _no_unknown(obj, Request.__slots__, where)
    if "id" not in obj:
        raise InputError(where, "missing required field 'id'")
    rid = _expect(obj["id"], str, f"{where}.id", "a string")
    if not rid:
        raise InputError(f"{where}.id", "must not be empty")
    prompt_len = _int(obj, "prompt_len", where, minimum=1)
    ids = obj.get("prompt_token_ids")
    token_ids: tuple[int, ...] | None = None
    if ids is not None:
        ids = _array(ids, f"{where}.prompt_token_ids")
        for j, t in enumerate(ids):
            _expect(t, int, f"{where}.prompt_token_ids[{j}]", "a token id (integer)")
            if not 0 <= t <= MAX_INT:
                raise InputError(f"{where}.prompt_token_ids[{j}]", f"token ids are in [0, 2^62], got {t}")
        if len(ids) != prompt_len:
            raise InputError(f"{where}.prompt_token_ids", f"has {len(ids)} ids but prompt_len is {prompt_len}")
        token_ids = tuple(ids)
    return Request(
        id=rid,
        prompt_len=prompt_len,
        output_len=_int(obj, "output_len", where, minimum=1),
        arrival_step=_int(obj, "arrival_step", where, default=0),
        prompt_token_ids=token_ids,
    )


def step_from_dict(obj: Any, where: str) -> Step:
    obj = _object(obj, where)
    _no_unknown(obj, ("insert", "preempt"), where)
    inserts = []
    for j, ins in enumerate(_array(obj.get("insert", []), f"{where}.insert")):
        w = f"{where}.insert[{j}]"
        ins = _object(ins, w)
        _no_unknown(ins, ("request", "slot", "start", "len"), w)
        if "request" not in ins:
            raise InputError(w, "missing required field 'request'")
        inserts.append(
            Insert(
                request=_expect(ins["request"], str, f"{w}.request", "a request id (string)"),
                slot=_int(ins, "slot", w),
                start=_int(ins, "start", w),
                length=_int(ins, "len", w, minimum=1),
            )
        )
    preempt = []
    for j, slot in enumerate(_array(obj.get("preempt", []), f"{where}.preempt")):
        _expect(slot, int, f"{where}.preempt[{j}]", "a slot (integer)")
        if slot < 0:
            raise InputError(f"{where}.preempt[{j}]", f"slots are >= 0, got {slot}")
        preempt.append(slot)
    return Step(insert=tuple(inserts), preempt=tuple(preempt))


def trace_from_dict(obj: Any) -> Trace:
    """Decode a parsed JSON document; raises InputError naming the JSON path of the first problem."""
    obj = _object(obj, "$")
    fmt = obj.get("format")
    if fmt != FORMAT_NAME:
        raise InputError("format", f"expected '{FORMAT_NAME}', got {_describe(fmt)}")
    if "version" not in obj:
        raise InputError("$", "missing required field 'version'")
    version = _expect(obj["version"], int, "version", "an integer")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise InputError("version", f"unknown version {version} (this fdoverlap reads {supported})")
    _no_unknown(obj, ("format", "version", "config", "requests", "steps", "meta"), "")
    for key in ("config", "requests", "steps"):
        if key not in obj:
            raise InputError("$", f"missing required field '{key}'")
    meta = _object(obj.get("meta", {}), "meta")
    return Trace(
        config=config_from_dict(obj["config"]),
        requests=tuple(
            request_from_dict(r, f"requests[{i}]") for i, r in enumerate(_array(obj["requests"], "requests"))
        ),
        steps=tuple(step_from_dict(s, f"steps[{i}]") for i, s in enumerate(_array(obj["steps"], "steps"))),
        meta=meta,
        version=version,
    )


# --------------------------------------------------------------------------- encoding


def trace_to_dict(trace: Trace) -> dict[str, Any]:
    """The JSON document of a trace; defaults are written out so a file says what it means."""
    c = trace.config
    requests = []
    for r in trace.requests:
        d: dict[str, Any] = {
            "id": r.id,
            "prompt_len": r.prompt_len,
            "output_len": r.output_len,
            "arrival_step": r.arrival_step,
        }
        if r.prompt_token_ids is not None:
            d["prompt_token_ids"] = list(r.prompt_token_ids)
        requests.append(d)
    steps = []
    for s in trace.steps:
        d = {}
        if s.insert:
            d["insert"] = [{"request": i.request, "slot": i.slot, "start": i.start, "len": i.length} for i in s.insert]
        if s.preempt:
            d["preempt"] = list(s.preempt)
        steps.append(d)
    return {
        "format": FORMAT_NAME,
        "version": trace.version,
        "config": {k: getattr(c, k) for k in TraceConfig.__slots__},
        "requests": requests,
        "steps": steps,
        "meta": trace.meta,
    }


def dumps(trace: Trace) -> str:
    """Deterministic text: the same trace always gives the same bytes (one step per line)."""
    doc = trace_to_dict(trace)
    head = {k: v for k, v in doc.items() if k not in ("requests", "steps", "meta")}
    compact = (",", ":")
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ': '))},")
    lines.append(f'  "meta": {json.dumps(doc["meta"], sort_keys=True, separators=(",", ": "))},')
    for key in ("requests", "steps"):
        items = doc[key]
        lines.append(f'  "{key}": [')
        for i, item in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            lines.append(f"    {json.dumps(item, separators=compact)}{sep}")
        lines.append("  ]," if key == "requests" else "  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_json_file(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a JSON file; every way it can be unreadable becomes one InputError naming it."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), f"no such {what}")
    if p.is_dir():
        raise InputError(str(p), f"is a directory, not a {what}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(str(p), f"cannot read: {e.strerror}") from None
    if not raw.strip():
        raise InputError(str(p), "is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(str(p), f"is not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}:{e.colno}", f"invalid JSON: {e.msg}") from None
    except RecursionError:
        raise InputError(str(p), "invalid JSON: nested too deeply") from None
