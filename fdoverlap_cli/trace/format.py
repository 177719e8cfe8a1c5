"""The trace format: what the engine handed the worker at each scheduler step.

A trace is JSON with a `format` name and a `version`; `docs/trace-format.md` documents it.
This module holds the data model and its JSON codec. Decoding checks structure and types and
names the JSON path of the first problem; `validate.py` checks what the replay relies on
(slot occupancy, chunk continuity, budgets).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from fdoverlap_cli.errors import InputError, clip
from fdoverlap_cli.fileio import read_input
from fdoverlap_cli.json_doc import describe

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
    return f"{clip(str(value))} is too large (at most " + (
        "2^62)" if maximum == MAX_INT else f"{maximum}: int32 buffers)"
    )


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
        raise InputError(where, f"expected {what}, got {describe(value)}")
    return value


def _int(
    obj: dict, key: str, where: str, *, minimum: int = 0, maximum: int = MAX_INT, default: int | None = None
) -> int:
    if key not in obj:
        if default is not None:
            return default
        raise InputError(where, f"missing required field '{key}'")
    value = _expect(obj[key], int, f"{where}.{key}", "an integer")
    if value < minimum:
        raise InputError(f"{where}.{key}", f"must be at least {minimum}, got {clip(str(value))}")
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
            raise InputError(f"{where}.{clip(key)}" if where else clip(key), "unknown field")


def _check_numbers(value: Any, where: str) -> None:
    """Every number in free-form `value` must be one JSON can hold: NaN and ±Infinity are not JSON."""
    todo = [(value, where)]
    while todo:
        node, at = todo.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise InputError(at, f"{json.dumps(node)} is not a JSON number (finite numbers only)")
        if isinstance(node, dict):
            todo.extend((v, f"{at}.{clip(k)}") for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((v, f"{at}[{i}]") for i, v in enumerate(node))


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
        raise InputError("format", f"expected '{FORMAT_NAME}', got {describe(fmt)}")
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
    _check_numbers(meta, "meta")
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


_LONG_INTEGER = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d{4301,})')  # strings skipped: digits inside them are text
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def read_json_file(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a JSON file; every way it can be unreadable becomes one InputError naming it: too large
    (fileio.MAX_INPUT_BYTES), not UTF-8, invalid JSON, an integer Python will not read (over 4,300
    digits), a string that is not text (a lone UTF-16 surrogate such as \\ud800)."""
    return decode_json(read_input(path, what), os.fspath(path))


def decode_json(raw: bytes, where: str) -> Any:
    """Parse the bytes of a JSON file named `where`, as `read_json_file` does."""
    if not raw.strip():
        raise InputError(where, "is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(where, f"is not UTF-8 text (byte {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}:{e.lineno}:{e.colno}", f"invalid JSON: {e.msg}") from None
    except RecursionError:
        raise InputError(where, "invalid JSON: nested too deeply") from None
    except ValueError:  # int() refuses a number of more than sys.get_int_max_str_digits() digits
        raise _long_integer(where, text) from None
    if _SURROGATE_ESCAPE.search(text):
        bad = _first_non_text(doc)
        if bad is not None:
            raise InputError(f"{where}: {bad[0]}", f"'{bad[1]}' holds a lone UTF-16 surrogate, which is not text")
    return doc


def _long_integer(where: str, text: str) -> InputError:
    for m in _LONG_INTEGER.finditer(text):
        if m.group(1):
            line = text.count("\n", 0, m.start(1)) + 1
            column = m.start(1) - (text.rfind("\n", 0, m.start(1)) + 1) + 1
            digits = len(m.group(1).lstrip("-"))
            return InputError(
                f"{where}:{line}:{column}", f"invalid JSON: an integer of {digits:,} digits (at most 4,300)"
            )
    return InputError(where, "invalid JSON: an integer of more than 4,300 digits")


def _first_non_text(doc: Any) -> tuple[str, str] | None:
    """(JSON path, clipped value) of the first key or string that cannot be encoded as UTF-8."""
    todo: list[tuple[Any, str]] = [(doc, "$")]
    while todo:
        value, where = todo.pop()
        if isinstance(value, str):
            items: list[tuple[Any, str]] = []
            strings = [value]
        elif isinstance(value, dict):
            items = [(v, f"{where}.{clip(k)}" if where != "$" else clip(k)) for k, v in value.items()]
            strings = list(value)
        elif isinstance(value, list):
            items = [(v, f"{where}[{i}]") for i, v in enumerate(value)]
            strings = []
        else:
            continue
        for s in strings:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                return where, clip(s.encode("utf-8", "backslashreplace").decode("ascii"))
        todo.extend(reversed(items))
    return None
