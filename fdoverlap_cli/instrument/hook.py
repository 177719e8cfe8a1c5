"""The child side of `fdoverlap instrument`: NVTX ranges put around named functions as their modules load.

`install()` reads the rules from $FDOVERLAP_INSTRUMENT (JSON, written by the parent: `Rule.to_dict`),
patches the target modules already imported, and puts a finder first on `sys.meta_path` that patches
the others right after they execute, before any importer sees their functions. Each patched function
pushes a range on its thread's NVTX stack (a cached domain, push/pop) and pops it when it returns or
raises. A range is not opened inside an open range of the same domain and name on the same thread
(a wrapper that calls the method it wraps gets one range). Nothing here may break the program: a
payload that cannot be read is left out, a target that is not there is reported once on stderr.

This file is loaded by path (boot/sitecustomize.py) in whatever Python runs the child, so it imports
only the standard library and `nvtx`. With NVTX_DISABLE set it installs nothing.
"""

from __future__ import annotations

import functools
import importlib.abc
import inspect
import itertools
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

ENV = "FDOVERLAP_INSTRUMENT"
PREFIX = "fdoverlap instrument: "
SOURCES = ("arg", "attr", "counter")
_MARK = "__fdoverlap_instrumented__"


def warn(message: str) -> None:
    sys.stderr.write(PREFIX + message + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Source:
    """Where a payload (or a name) comes from: an argument (by position after self/cls, or by name), an
    attribute of self, or a call counter (own, or shared by every rule naming the same counter); `path`
    is a chain of attributes read from it."""

    kind: str
    index: int | None = None
    param: str | None = None
    path: tuple[str, ...] = ()
    counter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": list(self.path)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        return cls(d["kind"], d.get("index"), d.get("param"), tuple(d.get("path") or ()), d.get("counter"))

    def __str__(self) -> str:
        if self.kind == "counter":
            return "counter" + (f":{self.counter}" if self.counter else "")
        if self.kind == "attr":
            return "attr:" + ".".join(self.path)
        head = self.param if self.param is not None else str(self.index)
        return f"arg:{head}" + "".join(f".{p}" for p in self.path)


@dataclass(frozen=True)
class Rule:
    """One range: around `module:qualname`, named `name` (or the value of `name_from`), in `domain`."""

    module: str
    qualname: str
    name: str | None
    domain: str
    category: str | None = None
    payload: Source | None = None
    name_from: Source | None = None
    optional: bool = False

    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["payload"] = self.payload.to_dict() if self.payload else None
        d["name_from"] = self.name_from.to_dict() if self.name_from else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        kw = dict(d)
        kw["payload"] = Source.from_dict(d["payload"]) if d.get("payload") else None
        kw["name_from"] = Source.from_dict(d["name_from"]) if d.get("name_from") else None
        return cls(**kw)


def encode(rules: list[Rule], *, verbose: bool = False) -> str:
    """The rules as the child reads them from $FDOVERLAP_INSTRUMENT."""
    return json.dumps({"ranges": [r.to_dict() for r in rules], "verbose": verbose}, separators=(",", ":"))


def decode(text: str) -> tuple[list[Rule], bool]:
    d = json.loads(text)
    return [Rule.from_dict(r) for r in d["ranges"]], bool(d.get("verbose"))


# --------------------------------------------------------------------------- reading a payload at a call


class _Reader:
    """Reads a Source at a call: precomputed positions, so a call costs a few lookups."""

    def __init__(self, source: Source, func: Any, bound: bool, counters: dict[str, Any]) -> None:
        self.source = source
        self.position: int | None = None  # in *args
        self.param = source.param
        self.default: Any = inspect.Parameter.empty
        if source.kind == "counter":
            key = source.counter or f"\0{id(self)}"
            self.counter = counters.setdefault(key, itertools.count())
            return
        if source.kind == "attr":
            self.position = 0
            return
        try:
            params = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):
            params = []
        offset = 1 if bound else 0
        if source.index is not None:
            self.position = source.index + offset
            if self.position < len(params):
                self.param, self.default = params[self.position].name, params[self.position].default
        else:
            for i, p in enumerate(params):
                if p.name == source.param and p.kind != p.KEYWORD_ONLY:
                    self.position, self.default = i, p.default
                elif p.name == source.param:
                    self.default = p.default

    def __call__(self, args: tuple, kwargs: dict) -> Any:
        s = self.source
        if s.kind == "counter":
            return next(self.counter)
        if self.position is not None and self.position < len(args):
            value = args[self.position]
        elif self.param is not None and self.param in kwargs:
            value = kwargs[self.param]
        elif self.default is not inspect.Parameter.empty:
            value = self.default
        else:
            raise LookupError(f"no argument {s}")
        for name in s.path:
            value = getattr(value, name)
        return value


# --------------------------------------------------------------------------- the ranges


class _Open(threading.local):
    def __init__(self) -> None:
        self.names: dict[tuple[str, str], int] = {}


@dataclass
class Instrumenter:
    """The rules, the NVTX domains, and what was patched."""

    rules: list[Rule]
    nvtx: Any
    verbose: bool = False
    patched: list[str] = field(default_factory=list)
    _open: _Open = field(default_factory=_Open)
    _counters: dict[str, Any] = field(default_factory=dict)
    _domains: dict[str, Any] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)

    @property
    def modules(self) -> set[str]:
        return {r.module for r in self.rules}

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    def domain(self, name: str) -> Any:
        if name not in self._domains:
            self._domains[name] = self.nvtx.get_domain(name)
        return self._domains[name]

    def patch_module(self, module: Any) -> None:
        for rule in self.rules:
            if rule.module == module.__name__:
                self._patch(module, rule)

    def _patch(self, module: Any, rule: Rule) -> None:
        owner, obj, parts = module, module, rule.qualname.split(".")
        for part in parts:
            owner, obj = obj, getattr(obj, part, None)
            if obj is None:
                if not rule.optional:
                    self.warn_once(rule.target, f"{rule.target}: {part} not found in {module.__name__}: no range")
                return
        raw = owner.__dict__.get(parts[-1], obj) if isinstance(owner, type) else obj
        kind = type(raw) if isinstance(raw, staticmethod | classmethod) else None
        func = raw.__func__ if kind is not None else raw
        if getattr(func, _MARK, False):
            return
        if not callable(func) or inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func):
            self.warn_once(rule.target, f"{rule.target}: not a plain function (async or generator): no range")
            return
        bound = isinstance(owner, type) and kind is not staticmethod
        wrapper = self._wrap(func, rule, bound)
        setattr(owner, parts[-1], kind(wrapper) if kind is not None else wrapper)
        self.patched.append(rule.target)
        if self.verbose:
            warn(f"{rule.target} -> range '{rule.name or rule.name_from}' in domain '{rule.domain}'")

    def _wrap(self, func: Any, rule: Rule, bound: bool) -> Any:
        domain = self.domain(rule.domain)
        categories: dict[str, int] = {}  # a range named at the call has the category of its name

        def category(name: str) -> int:
            key = rule.category or name
            if key not in categories:
                categories[key] = domain.get_category_id(key)
            return categories[key]

        payload = _Reader(rule.payload, func, bound, self._counters) if rule.payload else None
        name_from = _Reader(rule.name_from, func, bound, self._counters) if rule.name_from else None
        fixed = None
        if rule.name is not None and payload is None and name_from is None:
            fixed = domain.get_event_attributes(message=rule.name, category=category(rule.name))
        opened = self._open

        def read(reader: _Reader, args: tuple, kwargs: dict) -> Any:
            try:
                return reader(args, kwargs)
            except Exception as e:  # the program must not fail for its instrumentation
                self.warn_once(f"{rule.target} {reader.source}", f"{rule.target}: cannot read {reader.source}: {e}")
                return None

        def push(args: tuple, kwargs: dict) -> tuple[str, str] | None:
            name = rule.name if name_from is None else read(name_from, args, kwargs)
            if name is None:
                return None
            key = (rule.domain, str(name))
            if opened.names.get(key):
                return None
            attributes = fixed
            if attributes is None:
                value = read(payload, args, kwargs) if payload is not None else None
                try:
                    value = None if value is None else int(value)
                except (TypeError, ValueError, OverflowError):
                    self.warn_once(f"{rule.target} int", f"{rule.target}: payload {value!r} is not an integer")
                    value = None
                attributes = domain.get_event_attributes(message=str(name), category=category(str(name)), payload=value)
            domain.push_range(attributes)
            opened.names[key] = opened.names.get(key, 0) + 1
            return key

        @functools.wraps(func)
        def instrumented(*args: Any, **kwargs: Any) -> Any:
            key = push(args, kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                if key is not None:
                    opened.names[key] -= 1
                    domain.pop_range()

        setattr(instrumented, _MARK, True)
        return instrumented


# --------------------------------------------------------------------------- the import hook


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader; once the module has executed, its targets are patched."""

    def __init__(self, loader: Any, instrumenter: Instrumenter) -> None:
        self._loader = loader
        self._instrumenter = instrumenter

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._instrumenter.patch_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, instrumenter: Instrumenter) -> None:
        self._instrumenter = instrumenter
        self._modules = instrumenter.modules

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self._modules:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, self._instrumenter)
                return spec
        return None


def install(text: str | None = None) -> Instrumenter | None:
    """Install the rules of `text` (default: $FDOVERLAP_INSTRUMENT); None when there is nothing to do."""
    text = os.environ.get(ENV) if text is None else text
    if not text or os.environ.get("NVTX_DISABLE"):
        return None
    try:
        rules, verbose = decode(text)
    except (ValueError, KeyError, TypeError) as e:
        warn(f"${ENV} is not a rule list ({e}): no ranges")
        return None
    try:
        import nvtx
    except ImportError:
        warn(f"the nvtx module is not importable by {sys.executable}: no ranges (pip install nvtx)")
        return None
    instrumenter = Instrumenter(rules, nvtx, verbose=verbose)
    sys.meta_path.insert(0, _Finder(instrumenter))
    for name in sorted(instrumenter.modules):
        if name in sys.modules:
            instrumenter.patch_module(sys.modules[name])
    return instrumenter
