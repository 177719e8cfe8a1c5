"""The instrument spec: which functions of a Python program get which NVTX ranges (JSON or TOML).

    domain = "myengine"                 # the NVTX domain of the ranges below (default: fdoverlap)
    [env]                               # set in the program's environment
    MY_FLAG = "1"
    [[range]]
    target = "serve.engine:Engine.step" # module:function, module:Class.method, module:Outer.Inner.method
    name = "step"                       # the range's message (or name_from = "arg:path": the value's str)
    category = "step"                   # optional, default: the name
    payload = "counter"                 # optional, an integer: arg:NAME, arg:N (the N-th argument after
                                        # self), either followed by .attr..., attr:NAME[.attr...] (of
                                        # self), counter (this function's calls so far), counter:NAME
                                        # (shared by every range naming it)
    domain = "..."                      # optional, this range's own domain
    optional = true                     # optional: no warning when the target does not exist

The same as JSON: {"domain": ..., "env": {...}, "range": [{"target": ..., ...}, ...]}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.instrument.hook import Rule, Source
from fdoverlap_cli.measure.schema import DOMAIN

_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_RANGE_KEYS = {"target", "name", "name_from", "category", "payload", "domain", "optional"}
_TOP_KEYS = {"domain", "env", "range"}


@dataclass(frozen=True)
class InstrumentSpec:
    """Rules and environment for one instrumented run (from presets and spec files, in order)."""

    rules: tuple[Rule, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def __add__(self, other: InstrumentSpec) -> InstrumentSpec:
        return InstrumentSpec(self.rules + other.rules, {**self.env, **other.env})


def parse_target(where: str, text: Any) -> tuple[str, str]:
    """module:qualname (both dotted identifiers)."""
    module, colon, qualname = str(text).partition(":")
    if not colon or not _DOTTED.match(module) or not _DOTTED.match(qualname):
        raise InputError(where, f"'{text}' is not module:function or module:Class.method")
    return module, qualname


def parse_source(where: str, text: Any) -> Source:
    """counter[:NAME], arg:NAME[.attr...], arg:N[.attr...], attr:NAME[.attr...]."""
    kind, colon, rest = str(text).partition(":")
    if kind == "counter" and (not colon or _IDENT.match(rest)):
        return Source("counter", counter=rest or None)
    head, *tail = rest.split(".")
    path = tuple(tail)
    if colon and all(_IDENT.match(p) for p in path):
        if kind == "arg" and head.isdigit():
            return Source("arg", index=int(head), path=path)
        if kind == "arg" and _IDENT.match(head):
            return Source("arg", param=head, path=path)
        if kind == "attr" and _IDENT.match(head):
            return Source("attr", path=(head, *path))
    raise InputError(
        where, f"'{text}' is not arg:NAME, arg:N, attr:NAME (each with .attr... after it) or counter[:NAME]"
    )


def _rule(where: str, d: Any, domain: str) -> Rule:
    if not isinstance(d, dict):
        raise InputError(where, "a range is a table of target, name, category, payload, domain, optional")
    unknown = sorted(set(d) - _RANGE_KEYS)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown key (expected one of {', '.join(sorted(_RANGE_KEYS))})")
    if "target" not in d:
        raise InputError(where, "no target (module:function or module:Class.method)")
    module, qualname = parse_target(f"{where}.target", d["target"])
    if ("name" in d) == ("name_from" in d):
        raise InputError(where, "give the range a name, or name_from (an argument or attribute), not both")
    for key in ("name", "category", "domain"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            raise InputError(f"{where}.{key}", "expected a non-empty string")
    if "optional" in d and not isinstance(d["optional"], bool):
        raise InputError(f"{where}.optional", "expected true or false")
    name_from = parse_source(f"{where}.name_from", d["name_from"]) if "name_from" in d else None
    if name_from is not None and name_from.kind == "counter":
        raise InputError(f"{where}.name_from", "a name comes from an argument or an attribute, not a counter")
    return Rule(
        module=module,
        qualname=qualname,
        name=d.get("name"),
        domain=d.get("domain", domain),
        category=d.get("category"),
        payload=parse_source(f"{where}.payload", d["payload"]) if "payload" in d else None,
        name_from=name_from,
        optional=d.get("optional", False),
    )


def from_mapping(where: str, d: Any) -> InstrumentSpec:
    """A spec from its parsed JSON/TOML (errors name `where` and the key)."""
    if not isinstance(d, dict):
        raise InputError(where, "a spec is a table with range entries")
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{where}: {unknown[0]}", f"unknown key (expected {', '.join(sorted(_TOP_KEYS))})")
    domain = d.get("domain", DOMAIN)
    if not isinstance(domain, str) or not domain:
        raise InputError(f"{where}: domain", "expected a non-empty string")
    env = d.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        raise InputError(f"{where}: env", "expected a table of NAME = value")
    ranges = d.get("range", [])
    if not isinstance(ranges, list) or not ranges:
        raise InputError(f"{where}: range", "expected a list of ranges ([[range]] in TOML)")
    rules = tuple(_rule(f"{where}: range[{i}]", r, domain) for i, r in enumerate(ranges))
    return InstrumentSpec(rules, {str(k): _env_value(v) for k, v in env.items()})


def _env_value(v: Any) -> str:
    return ("1" if v else "0") if isinstance(v, bool) else str(v)


def load(path: str | Path) -> InstrumentSpec:
    """A spec file: TOML (.toml) or JSON (anything else)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(str(p), e.strerror or str(e)) from None
    except UnicodeDecodeError:
        raise InputError(str(p), "not a text file") from None
    if p.suffix != ".toml":
        try:
            return from_mapping(str(p), json.loads(text))
        except json.JSONDecodeError as e:
            raise InputError(str(p), f"not valid JSON: {e}") from None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise InputError(str(p), "reading TOML needs Python 3.11 or newer (tomllib); write the spec as JSON") from None
    try:
        return from_mapping(str(p), tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise InputError(str(p), f"not valid TOML: {e}") from None
