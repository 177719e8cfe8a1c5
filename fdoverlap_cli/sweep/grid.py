"""A sweep's grid: batch sizes (a trace synthesized per size) or trace files, times axes over the replay's options.

An axis is any scalar field of `session.ReplayConfig` or `engine.runner.RunnerOptions` but the few that say
what a run is rather than how it runs (`NOT_AXES`): a field added to either becomes an axis with no change
here. `--axis NAME=V1,V2,...` names it as the field (`copy_stream`) or as its flag (`copy-stream`); values
parse by the field's type (int, str, bool as on/off, an optional int as `none`). Every point's ReplayConfig
is built, and so checked by the config's own rules, before any point runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.errors import InputError, OptionError
from fdoverlap_cli.session import ReplayConfig

BATCH, TRACE = "batch", "trace"  # the first axis: batch sizes (synthesized traces) or trace files
# ReplayConfig fields that are not axes: what is replayed and recorded, and where (one device per sweep).
# tp: tensor-parallel ranks are processes of paddle's launcher, one compare each (not a sweep's point).
NOT_AXES = frozenset({"trace_file", "paths", "window", "command", "cuda_profiler_range", "device", "runner", "tp"})
_BOOLS = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class AxisField:
    """A field an axis varies: its name, whose field it is, and the type its values parse to."""

    name: str
    owner: str  # "config" (ReplayConfig) or "runner" (RunnerOptions)
    kind: type  # int, str or bool
    optional: bool = False  # None is a value (`none`)

    def parse(self, text: str) -> Any:
        t = text.strip()
        if self.optional and t.lower() in ("none", "default"):
            return None
        if self.kind is bool:
            if t.lower() not in _BOOLS:
                raise ValueError(f"expected on or off, got '{t}'")
            return _BOOLS[t.lower()]
        if self.kind is int:
            if not re.fullmatch(r"-?\d+", t):
                raise ValueError(f"expected a whole number, got '{t}'")
            return int(t)
        if not t:
            raise ValueError("an empty value")
        return t


def _scalar(hint: Any) -> tuple[type, bool] | None:
    """(type, optional) of a field's type hint if it is int, str, bool or one of them | None."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    if args:
        kinds = [a for a in args if a is not type(None)]
        return (kinds[0], True) if len(kinds) == 1 and kinds[0] in (int, str, bool) else None
    return (hint, False) if hint in (int, str, bool) else None


def axis_fields() -> dict[str, AxisField]:
    """Every field an axis may vary, by name (RunnerOptions' first: a name both have is the runner's)."""
    out: dict[str, AxisField] = {}
    for owner, cls in (("runner", RunnerOptions), ("config", ReplayConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            scalar = _scalar(hints[f.name])
            if f.name in out or (owner == "config" and f.name in NOT_AXES) or scalar is None:
                continue
            out[f.name] = AxisField(f.name, owner, *scalar)
    return out


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: a name and its values, in the order given."""

    name: str
    values: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values)}


def _values(text: str, where: str) -> list[str]:
    values = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in values):
        raise InputError(where, f"expected V1,V2,... with no empty value, got '{text}'")
    if len(set(values)) != len(values):
        raise InputError(where, f"a value is given twice in '{text}'")
    return values


def parse_batches(text: str) -> Axis:
    """`16,64,128` -> the batch axis (slots of each synthesized trace)."""
    sizes = []
    for v in _values(text, "--batch"):
        if not re.fullmatch(r"\d+", v) or not 1 <= int(v) <= 4096:
            raise InputError("--batch", f"expected batch sizes from 1 to 4096, got '{v}'")
        sizes.append(int(v))
    return Axis(BATCH, tuple(sizes))


def parse_axis(text: str, aliases: dict[str, str] | None = None) -> Axis:
    """`NAME=V1,V2` -> an Axis of typed values; NAME a field or its flag (`aliases`: flag -> field)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError("--axis", f"expected NAME=V1,V2,..., got '{text}'")
    fields = axis_fields()
    field = (aliases or {}).get(f"--{name.lstrip('-')}") or name.lstrip("-").replace("-", "_")
    if field in (BATCH, TRACE):
        raise InputError(f"--axis {name}", "batch sizes are --batch 16,64 and trace files --trace FILE")
    if field not in fields:
        raise InputError(f"--axis {name}", f"not an option a sweep can vary (one of: {', '.join(sorted(fields))})")
    parsed = []
    for v in _values(values, f"--axis {name}"):
        try:
            parsed.append(fields[field].parse(v))
        except ValueError as e:
            raise InputError(f"--axis {name}", str(e)) from None
    return Axis(field, tuple(parsed))


@dataclass(frozen=True)
class Point:
    """One point of the grid: its axis values, the trace it replays, its whole configuration."""

    key: dict[str, Any]  # axis name -> value, the first axis first (the trace's file name on a trace axis)
    config: ReplayConfig

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(v)}" for k, v in self.key.items())

    def identity(self, trace_sha256: str) -> str:
        """What makes two points the same measurement: every option but the command, and the trace's bytes."""
        options = {k: v for k, v in self.config.to_dict().items() if k not in ("command", "trace_file")}
        doc = json.dumps({"options": options, "trace": trace_sha256}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _show(v: Any) -> str:
    return {True: "on", False: "off", None: "none"}.get(v, str(v)) if isinstance(v, bool | None) else str(v)


def _with(config: ReplayConfig, axis: Axis, value: Any) -> ReplayConfig:
    field = axis_fields()[axis.name]
    try:
        if field.owner == "runner":
            return dataclasses.replace(config, runner=dataclasses.replace(config.runner, **{axis.name: value}))
        return dataclasses.replace(config, **{axis.name: value})
    except OptionError as e:
        raise InputError(f"--axis {axis.name}={_show(value)}", e.reason) from None


def points(base: ReplayConfig, first: Axis, traces: Sequence[Path], axes: Sequence[Axis]) -> list[Point]:
    """The grid's points, the first axis outermost; `traces[i]` is the trace of the first axis' i-th value."""
    names = [first.name, *(a.name for a in axes)]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"--axis {twice}", "given twice")
    out = []
    for (i, head), *rest in itertools.product(enumerate(first.values), *(a.values for a in axes)):
        config = dataclasses.replace(base, trace_file=traces[i])
        for axis, value in zip(axes, rest, strict=True):
            config = _with(config, axis, value)
        out.append(Point({first.name: head, **{a.name: v for a, v in zip(axes, rest, strict=True)}}, config))
    return out


@dataclass(frozen=True)
class SynthOptions:
    """How a batch size becomes a trace: `waves` × batch requests of these lengths, all arriving at once."""

    waves: int = 2
    prompt_len: str = "128..512"
    output_len: str = "32..48"
    seed: int = 0
    max_num_batched_tokens: int | None = None  # None: 2048, or 32 per slot where that is more

    def spec(self, batch: int) -> Any:
        from fdoverlap_cli.trace.scheduler import SchedulerOptions
        from fdoverlap_cli.trace.synth import SynthSpec, parse_lengths

        budget = self.max_num_batched_tokens or max(2048, 32 * batch)
        return SynthSpec(
            requests=self.waves * batch,
            prompt_len=parse_lengths(self.prompt_len, "--prompt-len"),
            output_len=parse_lengths(self.output_len, "--output-len"),
            seed=self.seed,
            scheduler=SchedulerOptions(max_num_seqs=batch, max_num_batched_tokens=budget),
        )


def synthesize(batches: Axis, synth: SynthOptions, folder: Path) -> list[Path]:
    """One trace per batch size, written to `folder/batch-N.json` (the same options: the same bytes)."""
    from fdoverlap_cli.trace import save_trace
    from fdoverlap_cli.trace.synth import synth_trace

    specs = [synth.spec(b) for b in batches.values]  # every option checked before a file is written
    files = []
    for b, spec in zip(batches.values, specs, strict=True):
        files.append(folder / f"batch-{b}.json")
        save_trace(synth_trace(spec), files[-1])
    return files
