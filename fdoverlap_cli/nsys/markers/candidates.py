"""Marker events -> step boundaries, and the automatic choice of the marker that fits an export best.

Grouping: occurrences of a marker with no kernel launched between them end the same step (FastDeploy
copies the sampled tokens and the stop flag back to back; a sync loop may copy and then wait). The
step's boundary is the group's last occurrence.

Regularity of the boundaries' times t_i (periods p_i = t_i - t_{i-1}):
  cv        = std(p) / mean(p)
  robust_cv = 1.4826 * median(|p - median(p)|) / median(p)   (a few long gaps, e.g. between phases,
                                                               leave it alone)
Fit of a candidate (lower is better): robust_cv + |ln(n / E)|, with n its boundaries and E the number
of sampler-like kernels (the second term only when there are any): one sampled batch per step.
Candidates within TIE of the best fit are a tie, won by the earlier kind: a copy of the sampled
tokens, then a synchronisation (both end the step's device work), then a sampler kernel (which
ends the step before its last kernels and copies).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from fdoverlap_cli.nsys import export as nsys
from fdoverlap_cli.nsys.markers import events, rows
from fdoverlap_cli.nsys.markers.spec import (
    HOST_MEMORY,
    SMALL_COPY_BYTES,
    SYNC_KINDS,
    CopyMarker,
    KernelMarker,
    NvtxMarker,
    StepSpec,
    SyncMarker,
)

MIN_OCCURRENCES = 3
TIE = 0.05


@dataclass(frozen=True)
class Regularity:
    """How regular a series of step boundaries is (definitions in the module docstring)."""

    count: int
    median_period_ns: float | None
    cv: float | None
    robust_cv: float | None

    @classmethod
    def of(cls, times: np.ndarray) -> Regularity:
        periods = np.diff(np.sort(np.asarray(times, dtype=np.float64)))
        if len(periods) < 2 or periods.mean() <= 0:
            return cls(len(times), float(np.median(periods)) if len(periods) else None, None, None)
        median = float(np.median(periods))
        robust = 1.4826 * float(np.median(np.abs(periods - median))) / median if median > 0 else None
        return cls(len(times), median, float(periods.std() / periods.mean()), robust)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Boundaries:
    """A marker's step boundaries in one process: the correlation id each step's work runs up to, when it
    happened (time_ns) and, where known, the host's time of it (host_ns, -1 otherwise)."""

    spec: StepSpec
    pid: int
    corr: np.ndarray
    time_ns: np.ndarray
    host_ns: np.ndarray
    events: int  # occurrences before grouping
    opening: tuple[int, int] | None  # NVTX: (correlation id, time) where the first range began: a whole step
    note: str | None

    def __len__(self) -> int:
        return len(self.corr)

    @property
    def markers(self) -> int:
        """Boundaries the marker itself made (an NVTX opening is the first range's start)."""
        return len(self.corr) - (self.opening is not None)


@dataclass(frozen=True)
class Candidate:
    """One marker tried by the automatic choice, and how well it fits."""

    spec: str
    events: int
    boundaries: int
    regularity: Regularity
    score: float | None  # None: not eligible (fewer than MIN_OCCURRENCES boundaries), or not tried
    tried: bool = True  # False: a copy of the sampled tokens fitted within TIE already, so it wins regardless

    def to_dict(self) -> dict:
        return {**self.__dict__, "regularity": self.regularity.to_dict()}


def _new_steps(occurrences: events.MarkerEvents, spec: StepSpec) -> np.ndarray:
    """Which occurrences start a new step, before any kernel is seen: only the first (NVTX ranges: all)."""
    new_step = np.zeros(len(occurrences), dtype=bool)
    if isinstance(spec, NvtxMarker):
        new_step[:] = True
    elif len(occurrences):
        new_step[0] = True
    return new_step


def _see_kernels(occurrences: events.MarkerEvents, new_step: np.ndarray, kernel_corrs: np.ndarray) -> None:
    """An occurrence with a kernel launched since the previous one starts a new step."""
    n = len(occurrences)
    j = np.searchsorted(occurrences.corr, kernel_corrs, side="left")
    between = (j >= 1) & (j < n)
    j = j[between]
    new_step[j[kernel_corrs[between] < occurrences.corr[j]]] = True


def _grouped(occurrences: events.MarkerEvents, spec: StepSpec, new_step: np.ndarray) -> Boundaries:
    n = len(occurrences)
    last = np.append(np.flatnonzero(new_step)[1:] - 1, n - 1) if n else np.empty(0, np.int64)
    corr, time_ns, host_ns = occurrences.corr[last], occurrences.time_ns[last], occurrences.host_ns[last]
    if occurrences.opening is not None and n:  # the first range's start opens its step
        start_corr, start_ns = occurrences.opening
        corr, time_ns, host_ns = (
            np.concatenate([[v], a]) for v, a in ((start_corr, corr), (start_ns, time_ns), (start_ns, host_ns))
        )
    return Boundaries(spec, occurrences.pid, corr, time_ns, host_ns, n, occurrences.opening, occurrences.note)


def group_all(
    export: nsys.NsysExport, index: rows.ExportIndex, found: list[tuple[StepSpec, events.MarkerEvents]]
) -> list[Boundaries]:
    """Merge occurrences with no kernel launched between them (NVTX ranges are steps as they are), for many
    markers at once: one pass over each process's kernels."""
    new_steps = [_new_steps(ev, spec) for spec, ev in found]
    by_pid: dict[int, list[int]] = {}
    for i, (spec, ev) in enumerate(found):
        if len(ev) and not isinstance(spec, NvtxMarker):
            by_pid.setdefault(ev.pid, []).append(i)
    for pid, which in by_pid.items():
        for corrs in rows.kernel_correlations(export, index, pid):
            for i in which:
                _see_kernels(found[i][1], new_steps[i], corrs)
    return [_grouped(ev, spec, new) for (spec, ev), new in zip(found, new_steps, strict=True)]


def boundaries(export: nsys.NsysExport, index: rows.ExportIndex, spec: StepSpec) -> Boundaries:
    """The step boundaries `spec` gives in the export."""
    return group_all(export, index, [(spec, events.of_spec(export, index, spec))])[0]


def regularity(b: Boundaries) -> Regularity:
    """How regular the boundaries are (an NVTX opening is the first range's start, not a boundary)."""
    return Regularity.of(b.time_ns[1:] if b.opening is not None else b.time_ns)


def fit(b: Boundaries, expected: int) -> Candidate:
    """The candidate's score (module docstring): how regular its steps are, and how near their count is to
    the number of sampler-like kernels."""
    reg = regularity(b)
    score = None
    if b.markers >= MIN_OCCURRENCES and reg.robust_cv is not None:
        score = reg.robust_cv + (abs(math.log(b.markers / expected)) if expected else 0.0)
    return Candidate(str(b.spec), b.events, b.markers, reg, score)


# --------------------------------------------------------------------------- the automatic choice


def candidate_specs(export: nsys.NsysExport, index: rows.ExportIndex) -> list[StepSpec]:
    """The markers worth trying, in order of preference on a tie: copies of the sampled tokens, host
    synchronisations, sampler kernels (NVTX ranges are only used when named)."""
    specs: list[StepSpec] = []
    if nsys.MEMCPY in index.tables:
        sizes: dict[str, dict[int, int]] = {}
        sql = (
            f"SELECT COALESCE(dstKind, -1), bytes, count(*) FROM {nsys.MEMCPY} "
            f"WHERE copyKind IN ({rows.sql_ids(index.copy_ids('dtoh'))}) GROUP BY 1, 2"
        )
        for batch in export.batches(sql):
            for dst, size, count in batch:
                memory = index.memory.get(dst, "other")
                sizes.setdefault(memory, {})[int(size)] = int(count)
        for memory in HOST_MEMORY:
            by_size = sizes.get(memory, {})
            if sum(c for s, c in by_size.items() if s <= SMALL_COPY_BYTES) >= MIN_OCCURRENCES:
                specs.append(CopyMarker("dtoh", memory, 0, SMALL_COPY_BYTES))
            size, count = max(by_size.items(), key=lambda sc: (sc[1], sc[0]), default=(0, 0))
            if size > SMALL_COPY_BYTES and count >= MIN_OCCURRENCES:
                specs.append(CopyMarker("dtoh", memory, size, size))
    calls = {}
    if nsys.RUNTIME in index.tables:
        ids = frozenset().union(*index.sync_ids.values())
        sql = f"SELECT nameId, count(*) FROM {nsys.RUNTIME} WHERE nameId IN ({rows.sql_ids(ids)}) GROUP BY 1"
        calls = {int(i): int(c) for batch in export.batches(sql) for i, c in batch}
    present = [k for k in SYNC_KINDS if sum(calls.get(i, 0) for i in index.sync_ids[k]) >= MIN_OCCURRENCES]
    specs += [SyncMarker((k,)) for k in present]
    if len(present) > 1:
        specs.append(SyncMarker())
    specs += _sampler_specs(export, index)
    return specs


def _sampler_specs(export: nsys.NsysExport, index: rows.ExportIndex) -> list[KernelMarker]:
    if nsys.KERNEL not in index.tables or not index.sampler_ids:
        return []
    ids = rows.sql_ids(index.sampler_ids)
    sql = (
        f"SELECT shortName, demangledName, count(*) FROM {nsys.KERNEL} "
        f"WHERE shortName IN ({ids}) OR demangledName IN ({ids}) GROUP BY 1, 2"
    )
    patterns: dict[str, int] = {}
    for batch in export.batches(sql):
        for short, demangled, count in batch:
            name = export.string(short) or ""
            if rows.SAMPLER_LIKE.search(name):
                pattern = f"^{re.escape(name)}$"
            else:  # a generic kernel (a reduction) whose template argument says what it computes
                m = rows.SAMPLER_LIKE.search(export.string(demangled) or "")
                pattern = re.escape(m.group(0)) if m else f"^{re.escape(name)}$"
            patterns[pattern] = patterns.get(pattern, 0) + int(count)
    return [KernelMarker(p) for p, count in patterns.items() if count >= MIN_OCCURRENCES]


def _winner_fits(tried: list[tuple[Boundaries | None, Candidate]]) -> bool:
    """Whether the winner so far (the first within TIE of the best score) scores TIE or less itself."""
    scores = [c.score for _, c in tried if c.score is not None]
    if not scores:
        return False
    best = min(scores)
    first = next(c.score for _, c in tried if c.score is not None and c.score <= best + TIE)
    return first <= TIE


def choose(export: nsys.NsysExport, index: rows.ExportIndex) -> tuple[Boundaries | None, list[Candidate], int]:
    """Try every candidate marker; return the best one's boundaries, all candidates (best first) and the
    number of sampler-like kernels they were measured against.

    The copies are tried first: when the one that wins among them fits within TIE of a perfect fit (score 0),
    no later candidate can change the winner (the tie margin over any best score still holds it, and no earlier
    copy gets in), so the others are listed as not tried (their occurrences are never read)."""
    tried = []
    expected_by_pid: dict[int, int] = {}
    specs = candidate_specs(export, index)
    copies = [s for s in specs if isinstance(s, CopyMarker)]
    for tier in (copies, [s for s in specs if not isinstance(s, CopyMarker)]):
        if _winner_fits(tried):
            tried += [(None, Candidate(str(s), 0, 0, Regularity(0, None, None, None), None, False)) for s in tier]
            continue
        found = [(spec, events.of_spec(export, index, spec)) for spec in tier]
        for b in group_all(export, index, found):
            if b.pid not in expected_by_pid:
                expected_by_pid[b.pid] = rows.sampler_like_count(export, index, b.pid) if len(b) else 0
            tried.append((b, fit(b, expected_by_pid[b.pid])))
    scores = [c.score for _, c in tried if c.score is not None]
    best_score = min(scores, default=None)
    ranked = sorted(tried, key=lambda bc: (not bc[1].tried, bc[1].score is None, bc[1].score or 0.0))
    best = next((b for b, c in tried if c.score is not None and c.score <= best_score + TIE), None)
    if best is not None:  # the winner first, then the rest by fit
        ranked.sort(key=lambda bc: bc[0] is not best)
    expected = expected_by_pid.get(best.pid, 0) if best is not None else 0
    return best, [c for _, c in ranked], expected
