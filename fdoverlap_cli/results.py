"""A run as one record, saved and loaded as it is (`run.json`); `view()` derives what is shown of it.

`RunResult` holds what the run measured and nothing derived: the environment, the trace and model,
the options, the CUDA graphs captured (sizes, capture time, memory), the token identity between the
paths, and per path (`PathRecord`) the step table (host
times and GPU times aligned to the host clock, int64 ns), the output reader's summary, and
per-request token digests. Every number shown comes from `view(window)`, which hands the step
tables to `measure.derive`: the same for the run just measured and for a run.json loaded again.
JSON exists only in `save` and `load`; a file of another format or version is refused in one line, and
one of this version is checked whole (results_format.py) before anything is built from it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli import __version__
from fdoverlap_cli.engine.designs import PR6176
from fdoverlap_cli.engine.graphs import EagerWarmup, GraphCapture
from fdoverlap_cli.engine.output_ipc import MSGQUEUE
from fdoverlap_cli.engine.token_check import IdentityCheck, StreamCheck
from fdoverlap_cli.errors import InputError
from fdoverlap_cli.fileio import write_json
from fdoverlap_cli.json_doc import check_file
from fdoverlap_cli.measure import schema
from fdoverlap_cli.measure.derive import Derived, PathTiming, Window, derive
from fdoverlap_cli.measure.metrics import RequestFacts, StepFacts
from fdoverlap_cli.measure.records import KIND_CODE, Kind, SpanTable, Track
from fdoverlap_cli.results_format import TIME_REFERENCE, check_results

RESULTS_FORMAT = "fdoverlap-run"
RESULTS_VERSION = 2


def step_spans(columns: dict[str, np.ndarray], copy_track: str) -> SpanTable:
    """The spans of a step table (schema.STEP_SPANS; rows with a missing end point are left out)."""
    tracks = (Track.HOST, Track.COMPUTE_STREAM, copy_track)
    kind, step, start, end, track = [], [], [], [], []

    def add(k: str | np.ndarray, steps: np.ndarray, s: np.ndarray, e: np.ndarray, t: str) -> None:
        ok = (s >= 0) & (e >= s)
        kind.append(np.broadcast_to(np.asarray(KIND_CODE[k] if isinstance(k, str) else k, np.int8), ok.shape)[ok])
        step.append(steps[ok])
        start.append(s[ok])
        end.append(e[ok])
        track.append(np.full(int(ok.sum()), tracks.index(t), np.int16))

    for k, s_col, e_col, t in schema.STEP_SPANS:
        if s_col in columns:
            add(k, columns["step"], columns[s_col], columns[e_col], t or copy_track)
    _, s_col, e_col, t = schema.WAIT_SPAN
    if s_col in columns:
        add(_wait_kinds(columns), columns["wait_step"], columns[s_col], columns[e_col], t)
    cat = np.concatenate
    return SpanTable(cat(kind), cat(step), cat(start), cat(end), cat(track), tracks)


def _wait_kinds(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The kind code of each wait row (schema.WAIT_KINDS by `wait_kind`; a Kind.WAIT where it says none)."""
    codes = np.array([KIND_CODE[k] for k in schema.WAIT_KINDS], np.int8)
    which = columns.get("wait_kind", np.full(len(columns["wait_start"]), -1))
    known = (which >= 0) & (which < len(codes))
    return np.where(known, codes[np.where(known, which, 0)], KIND_CODE[Kind.WAIT]).astype(np.int8)


def _token_steps(x: Any) -> bool:
    """A request's [first step, last step, tokens], as the session records it."""
    return isinstance(x, list) and len(x) == 3 and all(type(v) is int and 0 <= v < 2**62 for v in x)


@dataclass(frozen=True)
class ReaderSummary:
    """What the output reader received on one path, and its streams checked against the trace."""

    messages: int
    stop_messages: int  # messages whose msg_id was negative (not_need_stop false)
    markers: list[list[Any]]  # (message index, slot, request) of each preemption marker
    anomalies: list[str]
    anomaly_count: int
    output_check: StreamCheck

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "output_check": self.output_check.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReaderSummary:
        return cls(**{**d, "output_check": StreamCheck(**d["output_check"])})


@dataclass(frozen=True)
class ClockInfo:
    """How the GPU timestamps were put on the host clock (measure.clock.Alignment, as saved)."""

    offset_ns: int
    error_ns: int
    drift_ns: int
    samples: int
    resolution_ns: int | None


@dataclass
class PathRecord:
    """One path's replay as recorded: step table, tokens, the reader's summary."""

    name: str  # sync or overlap
    complete: bool
    columns: dict[str, np.ndarray]  # step table; times int64 ns on the host clock, -1 where absent
    copy_track: str = Track.COMPUTE_STREAM
    # request -> {"count", "sha256", "steps": [the steps of its first and last token, the tokens between]}
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    reader: ReaderSummary | None = None
    queue_full_waits: int = 0  # sends that found the output queue full (back-pressure)
    clock: ClockInfo | None = None  # None: no GPU timestamps

    def spans(self) -> SpanTable:
        return step_spans(self.columns, self.copy_track)

    @property
    def gpu_timed(self) -> bool:
        """Whether the step table holds the GPU's timestamps (not with --no-timestamps)."""
        return any(c in self.columns for c in schema.GPU_POINTS)

    def timing(self, gpu_timed: bool = True) -> PathTiming:
        """What the derivation reads of this path; `gpu_timed` false on a run without the GPU's timing."""
        c = self.columns
        facts = None
        if "generated" in c:
            extra = {
                name: c[col]
                for name, col in (
                    ("batch_tokens", "tokens"),
                    ("prefill_tokens", "prefill_tokens"),
                    ("model_ns", "model_ns"),
                    ("graph_rows", "graph_rows"),
                    ("emitted", "emitted"),
                )
                if col in c
            }
            facts = StepFacts.of(c["step"], c["generated"], **extra)
        steps = [t["steps"] for t in self.tokens.values() if _token_steps(t.get("steps"))]
        requests = RequestFacts.of(steps) if steps else None
        return PathTiming(self.spans(), self.complete, facts, requests, gpu_timed)

    def to_dict(self) -> dict[str, Any]:
        times = [v[v >= 0] for c, v in self.columns.items() if c in schema.TIME_COLUMNS]
        base = min((int(t.min()) for t in times if len(t)), default=0)
        cols = {}
        for name, values in self.columns.items():
            v = values.astype(np.int64)
            if name in schema.TIME_COLUMNS:
                ref = self.columns[TIME_REFERENCE[name]] if name in TIME_REFERENCE else base
                offsets = (v - ref).tolist()
                cols[name] = [None if m else x for x, m in zip(offsets, (v < 0).tolist(), strict=True)]
            else:
                cols[name] = v.tolist()
        return {
            "name": self.name,
            "complete": self.complete,
            "copy_track": self.copy_track,
            "time_base_ns": base,
            "columns": cols,
            "tokens": self.tokens,
            "reader": self.reader.to_dict() if self.reader else None,
            "queue_full_waits": self.queue_full_waits,
            "clock": asdict(self.clock) if self.clock else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathRecord:
        base = int(d["time_base_ns"])
        raw = d["columns"]
        columns: dict[str, np.ndarray] = {}
        # References first (pre_start and wait_start are relative to the base), then what refers to them.
        for name in sorted(raw, key=lambda c: c in TIME_REFERENCE):
            values = raw[name]
            if name in schema.TIME_COLUMNS:
                ref = columns[TIME_REFERENCE[name]] if name in TIME_REFERENCE else base
                missing = np.array([x is None for x in values], dtype=bool)
                offsets = np.array([0 if x is None else x for x in values], dtype=np.int64)
                columns[name] = np.where(missing, -1, offsets + ref)
            else:
                columns[name] = np.asarray(values, dtype=np.int64)
        return cls(
            name=d["name"],
            complete=bool(d["complete"]),
            columns=columns,
            copy_track=d["copy_track"],
            tokens=d["tokens"],
            reader=ReaderSummary.from_dict(d["reader"]) if d["reader"] else None,
            queue_full_waits=int(d["queue_full_waits"]),
            clock=ClockInfo(**d["clock"]) if d["clock"] else None,
        )


@dataclass
class RankRecord:
    """One rank of a tensor-parallel run as it recorded itself."""

    rank: int
    pid: int
    device: str | None
    messages_sent: dict[str, int]  # path -> save_output calls (only rank 0 sends)
    tokens: dict[str, dict[str, str]]  # path -> request id -> sha256 of the tokens the rank sampled
    paths: dict[str, PathRecord]  # the rank's own step tables (its barrier waits among them)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "paths": {name: p.to_dict() for name, p in self.paths.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankRecord:
        return cls(**{**d, "paths": {name: PathRecord.from_dict(p) for name, p in d["paths"].items()}})


@dataclass
class TensorParallel:
    """A `--tp N` run: its ranks (rank 0's paths are also the run's `paths`) and what they agreed on."""

    size: int
    backend: str  # paddle's collective backend: nccl or gloo
    ranks: list[RankRecord]

    def problems(self) -> list[str]:
        """Every rank must have sampled rank 0's tokens on every path, and only rank 0 may have sent them."""
        out: list[str] = []
        if not self.ranks:
            return out
        first = self.ranks[0]
        for rec in self.ranks[1:]:
            for path, tokens in rec.tokens.items():
                theirs = first.tokens.get(path, {})
                differ = sorted(rid for rid in tokens.keys() & theirs.keys() if tokens[rid] != theirs[rid])
                if differ:
                    out.append(f"rank {rec.rank} {path}: tokens differ from rank 0's for request {differ[0]}")
            if any(rec.messages_sent.values()):
                out.append(f"rank {rec.rank} sent {sum(rec.messages_sent.values())} messages (only rank 0 saves)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "backend": self.backend, "ranks": [r.to_dict() for r in self.ranks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorParallel:
        return cls(int(d["size"]), d["backend"], [RankRecord.from_dict(r) for r in d["ranks"]])


def environment(device_info: dict[str, Any] | None, device_kind: str, kernels: dict[str, str]) -> dict[str, Any]:
    """What ran the replay: fdoverlap, Python, the machine, paddle and the GPU, and the op library's kernel
    choices (the FDOVERLAP_* variables it reads)."""
    return {
        "fdoverlap": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_kind,
        "kernels": kernels,
        **({"paddle": device_info} if device_info else {}),
    }


@dataclass
class RunResult:
    """A whole run (replay or compare) as it was measured."""

    command: list[str]
    environment: dict[str, Any]  # fdoverlap, python, platform, device, kernels, paddle (DeviceInfo)
    trace: dict[str, Any]  # file, sha256, requests, steps, config, meta
    model: dict[str, Any]  # ModelConfig
    options: dict[str, Any]  # the replay's options (ReplayConfig)
    paths: dict[str, PathRecord] = field(default_factory=dict)
    identity: IdentityCheck | None = None  # the two paths' tokens, compared
    window: Window | None = None  # the steps the run's own output covered
    graphs: GraphCapture | None = None  # the decode CUDA graphs both paths replayed (None: none captured)
    eager_warmup: EagerWarmup | None = None  # the token counts run once before the paths (None: none, or the CPU)
    notes: list[str] = field(default_factory=list)
    tensor_parallel: TensorParallel | None = None  # the ranks of a --tp N run (None: one process)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def complete(self) -> bool:
        return bool(self.paths) and all(p.complete for p in self.paths.values())

    @property
    def runner(self) -> str:
        """The runner design the run replayed (develop, pr6176): options.runner.design; a run.json written
        before there were two runners ran the #6176 one."""
        return str((self.options.get("runner") or {}).get("design", PR6176))

    @property
    def output_ipc(self) -> str:
        """How save sent the tokens to the output reader (msgqueue, zmq); msgqueue in an older run.json."""
        return str(self.options.get("output_ipc", MSGQUEUE))

    @property
    def on_gpu(self) -> bool:
        """Whether the run timed a GPU: only then do the overlap's metrics mean anything."""
        return self.environment.get("device") == "gpu"

    def failures(self) -> list[str]:
        """One line per failed check (token identity between paths, each path's stream against the trace)."""
        failures = []
        if self.identity is not None and not self.identity.identical:
            d = self.identity.first_difference or {}
            failures.append(
                f"tokens differ first at request {d['request']}, token {d['token_index']} (step {d['step']})"
            )
        for name, p in self.paths.items():
            check = p.reader.output_check if p.reader else None
            if check and not check.ok:
                failures.append(f"{name}: {check.problems[0]}")
        if self.tensor_parallel is not None:
            failures += self.tensor_parallel.problems()
        return failures

    def view(self, window: Window | None) -> Derived:
        """Every number shown of this run, over `window` (None: every step it measured)."""
        return derive({name: p.timing(self.on_gpu and p.gpu_timed) for name, p in self.paths.items()}, window)

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
            "window": list(self.window) if self.window else None,
            "cuda_graphs": self.graphs.to_dict() if self.graphs else None,
            "eager_warmup": self.eager_warmup.to_dict() if self.eager_warmup else None,
            "identity": self.identity.to_dict() if self.identity else None,
            "notes": self.notes,
            "paths": {name: p.to_dict() for name, p in self.paths.items()},
            "tensor_parallel": self.tensor_parallel.to_dict() if self.tensor_parallel else None,
            "derived": self._derived_for_readers(),
        }

    def _derived_for_readers(self) -> dict[str, Any] | None:
        """The view of the run's own window, for readers of the file (fdoverlap derives it again on load);
        a view that cannot be had must not cost the measurement its file."""
        try:
            return self.view(self.window).to_dict() if self.paths else None
        except InputError as e:
            return {"unavailable": str(e)}

    def save(self, file: str | os.PathLike[str]) -> None:
        write_json(file, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, where: str = "run.json") -> RunResult:
        check_file(d, where, RESULTS_FORMAT, RESULTS_VERSION, "results", check_results)
        try:
            return cls(
                command=d["command"],
                environment=d["environment"],
                trace=d["trace"],
                model=d["model"],
                options=d["options"],
                paths={name: PathRecord.from_dict(p) for name, p in d["paths"].items()},
                identity=IdentityCheck(**d["identity"]) if d["identity"] else None,
                window=tuple(d["window"]) if d["window"] else None,
                graphs=GraphCapture.from_dict(d["cuda_graphs"]) if d.get("cuda_graphs") else None,
                eager_warmup=EagerWarmup.from_dict(d["eager_warmup"]) if d.get("eager_warmup") else None,
                notes=d["notes"],
                tensor_parallel=TensorParallel.from_dict(d["tensor_parallel"]) if d.get("tensor_parallel") else None,
                created=d["created"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(where, f"malformed results file ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, file: str | os.PathLike[str]) -> RunResult:
        from fdoverlap_cli.trace.format import read_json_file

        return cls.from_dict(read_json_file(file, "results file"), str(file))
