"""Reading a JSON document with each field's type and range checked as it is read.

Each failure is one InputError naming the field's JSON path (`paths.sync.columns.pre_start[3]`); the run.json
and sweep checkers read through these accessors, and the trace checker describes values with `describe`, so
their messages read alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fdoverlap_cli.errors import InputError, clip

MAX_VALUE = 2**62  # integers within ±2^62: int64 with room to subtract


def describe(value: Any) -> str:
    """A JSON value as an error message shows it: its kind, then the value, clipped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    name = {dict: "an object", list: "an array", str: "a string", float: "a number", int: "an integer"}
    text = clip(json.dumps(value, ensure_ascii=False)) if isinstance(value, (int, float, str)) else ""
    return f"{name.get(type(value), type(value).__name__)} {text}".strip()


def key_path(where: str, key: str) -> str:
    """The JSON path of `key` inside `where`."""
    return f"{where}.{clip(key)}" if where else clip(key)


class Doc:
    """Accessors that check as they read; each failure names the JSON path."""

    @staticmethod
    def object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InputError(where, f"expected an object, got {describe(value)}")
        return value

    @staticmethod
    def field(obj: dict[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            raise InputError(where, f"missing required field '{key}'")
        return obj[key]

    @classmethod
    def str(cls, obj: dict[str, Any], key: str, where: str, *, nullable: bool = False) -> str | None:
        value = cls.field(obj, key, where)
        if (value is None and nullable) or isinstance(value, str):
            return value
        raise InputError(key_path(where, key), f"expected a string, got {describe(value)}")

    @classmethod
    def bool(cls, obj: dict[str, Any], key: str, where: str) -> bool:
        value = cls.field(obj, key, where)
        if not isinstance(value, bool):
            raise InputError(key_path(where, key), f"expected true or false, got {describe(value)}")
        return value

    @staticmethod
    def int_value(value: Any, where: str, *, minimum: int = -MAX_VALUE, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(where, f"expected an integer, got {describe(value)}")
        if value < minimum:
            raise InputError(where, f"must be at least {minimum}, got {clip(str(value))}")
        if value > MAX_VALUE:
            raise InputError(where, f"{clip(str(value))} is too large (at most 2^62)")
        return value

    @classmethod
    def int(cls, obj: dict[str, Any], key: str, where: str, *, minimum: int = 0, nullable: bool = False) -> int | None:
        return cls.int_value(cls.field(obj, key, where), key_path(where, key), minimum=minimum, nullable=nullable)

    @classmethod
    def list(cls, obj: dict[str, Any], key: str, where: str) -> list[Any]:
        value = cls.field(obj, key, where)
        if not isinstance(value, list):
            raise InputError(key_path(where, key), f"expected an array, got {describe(value)}")
        return value

    @classmethod
    def strings(cls, obj: dict[str, Any], key: str, where: str) -> None:
        for i, item in enumerate(cls.list(obj, key, where)):
            if not isinstance(item, str):
                raise InputError(f"{key_path(where, key)}[{i}]", f"expected a string, got {describe(item)}")

    @classmethod
    def optional(cls, obj: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
        value = cls.field(obj, key, where)
        return None if value is None else cls.object(value, key_path(where, key))


def check_file(
    doc: Any, where: str, fmt: str, version: int, what: str, check: Callable[[dict[str, Any]], None]
) -> None:
    """A results file's format name and version, then `check` of the whole: one InputError naming where."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise InputError(where, f"not an fdoverlap {what} file (expected format '{fmt}')")
    if doc.get("version") != version:
        raise InputError(
            f"{where}: version",
            f"unknown {what} version {doc.get('version')!r} (this fdoverlap reads version {version})",
        )
    try:
        check(doc)
    except InputError as e:
        raise InputError(f"{where}: {e.where}" if e.where else where, e.reason) from None
