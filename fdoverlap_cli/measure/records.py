"""The interval records every timing source produces and every metric consumes.

The engine's own timing and the Nsight Systems reader both yield `Span`s, so one metrics
module serves both. All times are int64 nanoseconds on one clock (the host's CLOCK_MONOTONIC
for the engine's timing, with GPU timestamps aligned to it; the report's clock for nsys).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fdoverlap_cli.errors import InputError


class Kind:
    """What a span measures. GPU kinds feed C_k and D_k; host kinds feed S_k and B_k.

    A new host stage is a kind here, its step-table columns or NVTX range in measure/schema.py
    (`STEP_SPANS`, `STAGE_KINDS`) and its entry in `schema.EXPOSED`; a new kind of wait also goes
    into `WAITS` and `schema.WAIT_KINDS`."""

    COMPUTE = "compute"  # GPU: step k's forward and postprocess kernels (part of C_k)
    COPY = "copy"  # GPU: step k's device-to-host copies (D_k)
    SAVE = "save"  # host: save_model_output(k), event wait start to send end (S_k)
    ITERATION = "iteration"  # host: the loop iteration that launched step k (inserts included)
    WAIT = "wait"  # host: time inside an iteration spent waiting on the GPU (not busy), of no known kind
    INSERT = "insert"  # host: insert_tasks for step k
    PREPROCESS = "preprocess"  # host: preprocess_and_execute_model(k)
    POSTPROCESS = "postprocess"  # host: postprocess(k)
    # host: a tensor-parallel rank waiting for the others before the iteration's insert and launch (FastDeploy's
    # `_tp_barrier_wait`: a CPU barrier on the overlap path, #6259; paddle's collective barrier on the sync path)
    TP_BARRIER = "tp_barrier"
    # The waits the engine tells apart (each is a WAIT: B_k leaves it out, and W holds it).
    READBACK = "readback"  # host: reading a device value back before a launch (the token count)
    EVENT_WAIT = "event_wait"  # host: save(k) waiting for its step's event E_k
    BACKPRESSURE = "backpressure"  # host: the send blocked on a full output queue
    # host: the develop runner's token_num_event stage: waiting for the async copy of seq_lens_this_time and
    # predicting the next launch's token count from it (a wait: a numpy sum of max_num_seqs values is the rest)
    TOKEN_NUM = "token_num"

    GPU = (COMPUTE, COPY)
    # Appended, never reordered: run.json stores a wait's kind as its index here (schema.WAIT_KINDS).
    WAITS = (WAIT, READBACK, EVENT_WAIT, BACKPRESSURE, TOKEN_NUM)
    HOST = (
        SAVE,
        ITERATION,
        WAIT,
        INSERT,
        PREPROCESS,
        POSTPROCESS,
        READBACK,
        EVENT_WAIT,
        BACKPRESSURE,
        TP_BARRIER,
        TOKEN_NUM,
    )
    ALL = GPU + HOST


class Track:
    """Where a span ran: the host thread or a GPU stream."""

    HOST = "host"
    COMPUTE_STREAM = "gpu:compute"
    COPY_STREAM = "gpu:copy"


@dataclass(frozen=True, slots=True)
class Span:
    """One interval [start_ns, end_ns) of `kind` belonging to step `step`, on `track`."""

    kind: str
    step: int
    start_ns: int
    end_ns: int
    track: str = Track.HOST

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


KIND_CODE = {kind: code for code, kind in enumerate(Kind.ALL)}  # SpanTable.kind holds these codes


@dataclass(frozen=True)
class SpanTable:
    """Spans as columns, one numpy array each: what the metrics compute on (100k steps in one pass).

    `kind` holds codes into `Kind.ALL` (see KIND_CODE), `track` codes into `track_names`.
    """

    kind: np.ndarray  # int8
    step: np.ndarray  # int64
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    track: np.ndarray  # int16
    track_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def from_spans(cls, spans: Iterable[Span]) -> SpanTable:
        """Columns of `spans`; an unknown kind or an end before its start is an InputError."""
        spans = list(spans)
        n = len(spans)
        try:
            kind = np.fromiter((KIND_CODE[s.kind] for s in spans), np.int8, n)
        except KeyError as e:
            raise InputError("spans", f"unknown span kind {e.args[0]!r} (known: {', '.join(Kind.ALL)})") from None
        track_code: dict[str, int] = {}
        track = np.fromiter((track_code.setdefault(s.track, len(track_code)) for s in spans), np.int16, n)
        table = cls(
            kind=kind,
            step=np.fromiter((s.step for s in spans), np.int64, n),
            start_ns=np.fromiter((s.start_ns for s in spans), np.int64, n),
            end_ns=np.fromiter((s.end_ns for s in spans), np.int64, n),
            track=track,
            track_names=tuple(track_code),
        )
        bad = np.flatnonzero(table.end_ns < table.start_ns)
        if len(bad):
            raise InputError("spans", f"{len(bad)} span(s) end before they start, first: {spans[bad[0]]}")
        return table

    def to_spans(self) -> list[Span]:
        """The rows as `Span`s (the inverse of `from_spans`)."""
        return [
            Span(Kind.ALL[k], s, a, b, self.track_names[t])
            for k, s, a, b, t in zip(
                self.kind.tolist(),
                self.step.tolist(),
                self.start_ns.tolist(),
                self.end_ns.tolist(),
                self.track.tolist(),
                strict=True,
            )
        ]

    def select(self, rows: np.ndarray) -> SpanTable:
        """The rows picked by a boolean mask or index array."""
        return SpanTable(
            self.kind[rows], self.step[rows], self.start_ns[rows], self.end_ns[rows], self.track[rows], self.track_names
        )

    def of_kind(self, *kinds: str) -> SpanTable:
        """The rows of the given kinds."""
        return self.select(np.isin(self.kind, [KIND_CODE[k] for k in kinds]))

    def intervals(self) -> np.ndarray:
        """The rows as an (n, 2) int64 array of [start_ns, end_ns)."""
        return np.column_stack([self.start_ns, self.end_ns])
