"""A run as one results object, saved and loaded as it is (`run.json`); renderers only present it.

`RunResult` holds the environment, the trace and model, the options, and per path the step table
(host times and GPU times aligned to the host clock, int64 ns), the reader's summary, per-request
token digests, and the metrics computed from the table's spans.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli import __version__
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import write_json
from fdoverlap_cli.measure.records import KIND_CODE, Kind, SpanTable, Track

RESULTS_FORMAT = "fdoverlap-run"
RESULTS_VERSION = 1

# (kind, start column, end column, track) of each span a step row holds.
_STEP_SPANS = (
    (Kind.ITERATION, "iter_start", "iter_end", Track.HOST),
    (Kind.INSERT, "insert_start", "insert_end", Track.HOST),
    (Kind.PREPROCESS, "pre_start", "pre_end", Track.HOST),
    (Kind.POSTPROCESS, "post_start", "post_end", Track.HOST),
    (Kind.SAVE, "save_start", "save_end", Track.HOST),
    (Kind.COMPUTE, "gpu_pre_start", "gpu_fwd_end", Track.COMPUTE_STREAM),
    (Kind.COMPUTE, "gpu_post_start", "gpu_post_end", Track.COMPUTE_STREAM),
    (Kind.COPY, "gpu_copy_start", "gpu_copy_end", None),  # the copy stream's track, or the compute stream's
)
_TIME_COLUMNS = (*(c for _, s, e, _ in _STEP_SPANS for c in (s, e)), "wait_start", "wait_end")
# run.json stores a row's times relative to its pre_start (set when the row is made, so always there),
# a wait's end relative to its start, and those two relative to the file's time base: a few digits a
# value instead of twelve. Missing values are null. Per-step metrics are recomputed, not stored.
_REFERENCE = {c: "pre_start" for c in _TIME_COLUMNS if c not in ("pre_start", "wait_start", "wait_end")}
_REFERENCE["wait_end"] = "wait_start"


def step_spans(columns: dict[str, np.ndarray], copy_track: str) -> SpanTable:
    """The spans of a step table (rows with a missing end point are left out)."""
    tracks = (Track.HOST, Track.COMPUTE_STREAM, copy_track)
    kind, step, start, end, track = [], [], [], [], []

    def add(k: str, steps: np.ndarray, s: np.ndarray, e: np.ndarray, t: str) -> None:
        ok = (s >= 0) & (e >= s)
        kind.append(np.full(int(ok.sum()), KIND_CODE[k], np.int8))
        step.append(steps[ok])
        start.append(s[ok])
        end.append(e[ok])
        track.append(np.full(int(ok.sum()), tracks.index(t), np.int16))

    for k, s_col, e_col, t in _STEP_SPANS:
        if s_col in columns:
            add(k, columns["step"], columns[s_col], columns[e_col], t or copy_track)
    if "wait_start" in columns:
        add(Kind.WAIT, columns["wait_step"], columns["wait_start"], columns["wait_end"], Track.HOST)
    cat = np.concatenate
    return SpanTable(cat(kind), cat(step), cat(start), cat(end), cat(track), tracks)


@dataclass
class PathResult:
    """One path's replay: step table, tokens, checks and metrics."""

    path: str
    complete: bool
    columns: dict[str, np.ndarray]  # step table; times int64 ns on the host clock, -1 where absent
    copy_track: str
    tokens: dict[str, dict[str, Any]]  # request -> {"count", "sha256"}
    reader: dict[str, Any]  # messages, stop messages, markers, anomalies, check against the trace
    stats: dict[str, Any]  # wall time, queue back-pressure, executed steps
    clock: dict[str, Any] | None = None  # alignment of GPU timestamps to the host clock
    metrics: dict[str, Any] | None = None

    def spans(self) -> SpanTable:
        return step_spans(self.columns, self.copy_track)

    def to_dict(self) -> dict[str, Any]:
        times = [v[v >= 0] for c, v in self.columns.items() if c in _TIME_COLUMNS]
        base = min((int(t.min()) for t in times if len(t)), default=0)
        cols = {}
        for name, values in self.columns.items():
            v = values.astype(np.int64)
            if name in _TIME_COLUMNS:
                ref = self.columns[_REFERENCE[name]] if name in _REFERENCE else base
                offsets = (v - ref).tolist()
                cols[name] = [None if m else x for x, m in zip(offsets, (v < 0).tolist(), strict=True)]
            else:
                cols[name] = v.tolist()
        metrics = {k: v for k, v in self.metrics.items() if k != "per_step"} if self.metrics else None
        return {
            "path": self.path,
            "complete": self.complete,
            "copy_track": self.copy_track,
            "time_base_ns": base,
            "columns": cols,
            "tokens": self.tokens,
            "reader": self.reader,
            "stats": self.stats,
            "clock": self.clock,
            "metrics": metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathResult:
        base = int(d.get("time_base_ns", 0))
        raw = d["columns"]
        columns: dict[str, np.ndarray] = {}
        # References first (pre_start and wait_start are relative to the base), then what refers to them.
        for name in sorted(raw, key=lambda c: c in _REFERENCE):
            values = raw[name]
            if name in _TIME_COLUMNS:
                ref = columns[_REFERENCE[name]] if name in _REFERENCE else base
                missing = np.array([x is None for x in values], dtype=bool)
                offsets = np.array([0 if x is None else x for x in values], dtype=np.int64)
                columns[name] = np.where(missing, -1, offsets + ref)
            else:
                columns[name] = np.asarray(values, dtype=np.int64)
        return cls(
            path=d["path"],
            complete=bool(d["complete"]),
            columns=columns,
            copy_track=d.get("copy_track", Track.COMPUTE_STREAM),
            tokens=d["tokens"],
            reader=d["reader"],
            stats=d["stats"],
            clock=d.get("clock"),
            metrics=d.get("metrics"),
        )


def environment(device_info: dict[str, Any] | None, device_kind: str) -> dict[str, Any]:
    """What ran the replay: fdoverlap, Python, the machine, paddle and the GPU."""
    return {
        "fdoverlap": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_kind,
        **({"paddle": device_info} if device_info else {}),
    }


@dataclass
class RunResult:
    """A whole run (replay or compare)."""

    command: list[str]
    environment: dict[str, Any]
    trace: dict[str, Any]  # path, sha256, requests, steps, config
    model: dict[str, Any]
    options: dict[str, Any]
    paths: dict[str, PathResult] = field(default_factory=dict)
    check: dict[str, Any] | None = None  # token identity between the paths
    comparison: dict[str, Any] | None = None  # metrics side by side
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def complete(self) -> bool:
        return bool(self.paths) and all(p.complete for p in self.paths.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "complete": self.complete,
            "created": self.created,
            "command": self.command,
            "environment": self.environment,
            "trace": self.trace,
            "model": self.model,
            "options": self.options,
            "check": self.check,
            "comparison": self.comparison,
            "notes": self.notes,
            "paths": {name: p.to_dict() for name, p in self.paths.items()},
        }

    def save(self, path: str) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, where: str = "run.json") -> RunResult:
        if not isinstance(d, dict) or d.get("format") != RESULTS_FORMAT:
            raise InputError(where, f"not an fdoverlap results file (expected format '{RESULTS_FORMAT}')")
        if d.get("version") != RESULTS_VERSION:
            raise InputError(f"{where}: version", f"unknown results version {d.get('version')!r}")
        try:
            paths = {name: PathResult.from_dict(p) for name, p in d["paths"].items()}
            return cls(
                command=d["command"],
                environment=d["environment"],
                trace=d["trace"],
                model=d["model"],
                options=d["options"],
                paths=paths,
                check=d.get("check"),
                comparison=d.get("comparison"),
                notes=d.get("notes", []),
                created=d.get("created", ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(where, f"malformed results file ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: str) -> RunResult:
        from fdoverlap_cli.trace.format import read_json_file

        return cls.from_dict(read_json_file(path, "results file"), str(path))
