"""Decode steps of an Nsight Systems export without the tool's NVTX: found from CUDA activity.

Serving loops that emit no NVTX (FastDeploy's runtime, transformers' continuous batching) still mark
each decode step in their report: a small device-to-host copy of the sampled tokens, a host
synchronisation, a sampler kernel. `find_steps` takes the marker named by a `--steps` spec
(spec.py), or tries every candidate and picks the one that fits best (candidates.py), then measures
every step between consecutive markers (per_step.py; definitions in result.py).

    spec        the --steps grammar -> a typed StepSpec
    rows        SQL only: the export's name tables, the record streams in chunks
    events      SQL only: a marker's occurrences
    candidates  occurrences -> step boundaries; the automatic choice
    per_step    the record streams -> per-step sums (numpy, chunk by chunk)
    result      the typed result (MarkerSteps) and its JSON
    agreement   steps found against reference steps (an NVTX range of the same run)
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.markers import candidates, rows
from fdoverlap_cli.nsys.markers.candidates import Boundaries, Candidate, Regularity
from fdoverlap_cli.nsys.markers.per_step import StepAccumulator
from fdoverlap_cli.nsys.markers.result import (
    CopyColumns,
    MarkerChoice,
    MarkerSteps,
    Repeated,
    RunSummary,
    StepTable,
)
from fdoverlap_cli.nsys.markers.spec import StepSpec, parse_steps

__all__ = [
    "Candidate",
    "CopyColumns",
    "MarkerChoice",
    "MarkerSteps",
    "Regularity",
    "Repeated",
    "RunSummary",
    "StepSpec",
    "StepTable",
    "find_steps",
    "find_steps_in",
    "parse_steps",
]


class KernelReader(Protocol):
    """Another reader of every kernel (nsys.summary.GpuRecords): chunks by start time, then close."""

    def add(self, start: np.ndarray, end: np.ndarray, name: np.ndarray) -> None: ...  # name -1: a graph record

    def close(self) -> None: ...


def _measure(
    export: nsys.NsysExport, index: rows.ExportIndex, b: Boundaries, every_kernel: KernelReader | None
) -> StepAccumulator:
    """One pass over each of the process's record streams; the kernels' pass also hands every process's
    kernels and whole-graph records to `every_kernel`, by start time, when given."""
    acc = StepAccumulator(b, index)
    if every_kernel is None:
        for chunk in rows.kernels(export, index, b.pid):
            acc.add_kernels(chunk)
    else:
        for chunk in rows.every_kernel(export, index, b.pid):
            every_kernel.add(chunk[:, 0], chunk[:, 1], chunk[:, 3])
            mine = chunk[chunk[:, 4] >= rows.MINE]
            mine[:, 4] -= rows.MINE
            if len(mine):
                acc.add_kernels(mine)
        every_kernel.close()
    for chunk in rows.copies(export, index, b.pid):
        acc.add_copies(chunk)
    for chunk in rows.memsets(export, index, b.pid):
        acc.add_memsets(chunk)
    for chunk in rows.calls(export, index, b.pid):
        acc.add_calls(chunk)
    return acc


def _notes(b: Boundaries, table: StepTable, run: RunSummary) -> list[str]:
    notes = [b.note] if b.note else []
    if run.pageable_dtoh_steps:
        notes.append(
            f"{run.pageable_dtoh_steps} of {run.steps} steps copy device-to-host into pageable memory: CUDA "
            "completes such a copy before the call returns, so the host waits for the GPU there"
        )
    if run.graph_launches and not run.graph_kernels and not table.graph_executions.any():
        notes.append("CUDA graphs were launched but the export has no graph kernels or executions")
    return notes


def find_steps(
    export: nsys.NsysExport, spec: StepSpec | None = None, every_kernel: KernelReader | None = None
) -> MarkerSteps:
    """The steps `spec` marks in `export` (None: the marker that fits best), measured step by step; the pass
    over the kernels that measures them hands every kernel to `every_kernel` too (see `_measure`), so a
    caller can tell whether it ran by whether it was closed."""
    if nsys.RUNTIME not in export.tables:
        return MarkerSteps(str(export.path), None, None, None, "no CUDA trace in the export (profile with -t cuda)")
    index = rows.ExportIndex.read(export)
    if spec is None:
        b, tried, expected = candidates.choose(export, index)
        how = "automatic"
        if b is None:
            reason = (
                "no marker repeats regularly (no small device-to-host copy, host synchronisation or sampler kernel "
                f"occurs {candidates.MIN_OCCURRENCES} times or more); name one with --steps"
            )
            return MarkerSteps(str(export.path), None, None, None, reason)
    else:
        b, how = candidates.boundaries(export, index, spec), "given"
        expected = rows.sampler_like_count(export, index, b.pid) if len(b) else 0
        tried = [candidates.fit(b, expected)]
    choice = MarkerChoice(
        spec=str(b.spec),
        chosen=how,
        process=b.pid,
        events=b.events,
        boundaries=b.markers,
        regularity=candidates.regularity(b),
        sampler_like_kernels=expected,
        candidates=tuple(tried) if how == "automatic" else (),
    )
    if len(b) < 2:
        reason = f"{b.spec}: {'no occurrence' if not len(b) else 'one occurrence'} in the export: no step"
        return MarkerSteps(str(export.path), choice, None, None, reason)
    table, run = _measure(export, index, b, every_kernel).derive()
    return MarkerSteps(str(export.path), choice, table, run, None, _notes(b, table, run))


def find_steps_in(path: str | os.PathLike[str], spec: StepSpec | str | None = None) -> MarkerSteps:
    """`find_steps` on the export at `path`; `spec` may be a `--steps` string. Bad input is an InputError."""
    parsed = parse_steps(spec) if isinstance(spec, str) else spec
    try:
        with nsys.NsysExport.open(path) as export:
            return find_steps(export, parsed)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(str(path), f"unexpected values in the export ({e}); is it an unaltered nsys export?") from None
