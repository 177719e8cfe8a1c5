"""Test helpers for the nsys commands: the tool's own results (run.json) of a simulated run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fdoverlap_cli.measure.nsys_synthetic import EngineShape
from fdoverlap_cli.measure.records import Kind, Span, Track
from fdoverlap_cli.results import PathResult, RunResult

_HOST_COLUMNS = {
    Kind.ITERATION: "iter",
    Kind.INSERT: "insert",
    Kind.PREPROCESS: "pre",
    Kind.POSTPROCESS: "post",
    Kind.SAVE: "save",
}


def _step_table(spans: list[Span], shape: EngineShape, save_shift_ns: int) -> dict[str, np.ndarray]:
    """The step table the engine records: host stage bounds, and GPU timestamps at the stage boundaries
    (the forward from its first to its last kernel, postprocess likewise, the copies as one interval)."""
    steps = sorted({s.step for s in spans if s.kind == Kind.ITERATION})
    row = {k: i for i, k in enumerate(steps)}
    names = [f"{p}_{e}" for p in _HOST_COLUMNS.values() for e in ("start", "end")]
    names += ["gpu_pre_start", "gpu_fwd_end", "gpu_post_start", "gpu_post_end", "gpu_copy_start", "gpu_copy_end"]
    cols = {name: np.full(len(steps), -1, np.int64) for name in names}

    def widen(start_col: str, end_col: str, i: int, s: Span) -> None:
        a, b = cols[start_col], cols[end_col]
        a[i] = s.start_ns if a[i] < 0 else min(a[i], s.start_ns)
        b[i] = max(b[i], s.end_ns)

    for s in spans:
        if s.step not in row:
            continue
        i = row[s.step]
        shift = save_shift_ns if s.kind == Kind.SAVE else 0
        if s.kind in _HOST_COLUMNS:
            prefix = _HOST_COLUMNS[s.kind]
            cols[f"{prefix}_start"][i], cols[f"{prefix}_end"][i] = s.start_ns + shift, s.end_ns + shift
        elif s.kind == Kind.COMPUTE and s.duration_ns == shape.forward_kernel_ns:
            widen("gpu_pre_start", "gpu_fwd_end", i, s)
        elif s.kind == Kind.COMPUTE:
            widen("gpu_post_start", "gpu_post_end", i, s)
        elif s.kind == Kind.COPY:
            widen("gpu_copy_start", "gpu_copy_end", i, s)
    waits = [s for s in spans if s.kind == Kind.WAIT]
    cols["step"] = np.array(steps, np.int64)
    cols["tokens"] = np.ones(len(steps), np.int64)
    cols["wait_step"] = np.array([s.step for s in waits], np.int64)
    cols["wait_start"] = np.array([s.start_ns for s in waits], np.int64)
    cols["wait_end"] = np.array([s.end_ns for s in waits], np.int64)
    return cols


def tool_results(
    expected: dict[str, list[Span]], out: Path, *, shape: EngineShape | None = None, save_shift_ns: int = 0
) -> Path:
    """Write the tool's own results of a `simulate_export` run to `out` (saves shifted by `save_shift_ns`)."""
    shape = shape or EngineShape()
    paths = {
        name: PathResult(
            path=name,
            complete=True,
            columns=_step_table(spans, shape, save_shift_ns),
            copy_track=Track.COMPUTE_STREAM,
            tokens={},
            reader={},
            stats={},
        )
        for name, spans in expected.items()
    }
    RunResult(
        command=["fdoverlap", "compare"],
        environment={"device": "gpu"},
        trace={"path": "simulated", "requests": 0, "steps": 0},
        model={"name": "simulated"},
        options={},
        paths=paths,
    ).save(str(out))
    return out
