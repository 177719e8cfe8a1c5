"""Per-step sums over the record streams of one process, chunk by chunk, with numpy.

A record belongs to interval g = the number of boundaries whose correlation id is below its own
(searchsorted): interval 0 is everything before the first boundary, interval n everything after the
last, and intervals 1..n-1 are the steps (step i = interval i + 1). Every chunk is sorted by interval
once and reduced per interval with reduceat, so memory is a few arrays per interval plus one chunk.

The union of a step's kernel intervals needs the kernels in start order: the kernel stream comes
sorted by start, and each interval keeps the latest kernel end seen so far (its carry) across chunks.
A kernel adds max(0, end - max(start, latest end before it)) to its interval's union.
"""

from __future__ import annotations

import numpy as np

from fdoverlap_cli.measure.catalog import COPY_CLASSES
from fdoverlap_cli.measure.metrics import Summary
from fdoverlap_cli.nsys.markers.candidates import Boundaries
from fdoverlap_cli.nsys.markers.result import (
    LONG_STEP,
    REPEAT_SHARE,
    CopyColumns,
    CopyPerStep,
    Repeated,
    RunSummary,
    StepTable,
)
from fdoverlap_cli.nsys.markers.rows import ExportIndex

_NONE = np.iinfo(np.int64).min
_LATEST = np.iinfo(np.int64).max
_KINDS = ("dtoh", "htod", "dtod", "other")
_MEMORY = ("pinned", "pageable", "device", "other")
_CLASSES = tuple(c for c, _ in COPY_CLASSES)
GRAPH_NAME = "(CUDA graph)"
TOP_REPEATS = 10


def _lut(mapping: dict[int, int], default: int) -> tuple[np.ndarray, int]:
    """An array lookup table for small non-negative ids (ids outside it map to `default`)."""
    size = max(mapping, default=0) + 1
    table = np.full(size + 1, default, dtype=np.int64)
    for k, v in mapping.items():
        if k >= 0:
            table[k] = v
    return table, size


def _look(table: tuple[np.ndarray, int], ids: np.ndarray) -> np.ndarray:
    lut, size = table
    return lut[np.where((ids >= 0) & (ids < size), ids, size)]


class _Groups:
    """One chunk's rows sorted by interval: `ug` the intervals present, `at` where each starts."""

    def __init__(self, g: np.ndarray) -> None:
        self.order = np.argsort(g, kind="stable")
        gs = g[self.order]
        self.at = np.flatnonzero(np.concatenate([[True], gs[1:] != gs[:-1]])) if len(gs) else np.empty(0, np.int64)
        self.ug = gs[self.at]
        self.sorted_g = gs

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values[self.order], self.at) if len(self.at) else np.empty(0, np.int64)

    def min(self, values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values[self.order], self.at)

    def max(self, values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values[self.order], self.at)

    def count(self) -> np.ndarray:
        return np.diff(np.append(self.at, len(self.order)))


def _union_add(start: np.ndarray, end: np.ndarray, group: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """What each interval (start-sorted within its group; groups contiguous, dense 0..G-1) adds to its group's
    union, given carry[G] = the latest end seen before in that group; updates carry in place."""
    n = len(start)
    if n == 0:
        return np.empty(0, np.int64)
    base = int(start.min())
    span = int(end.max()) - base + 1
    if (int(group[-1]) + 1) * span < 2**62:  # prefix max within groups: offset each group above the last
        offset = group * span
        running = np.maximum.accumulate(end - base + offset) - offset + base
    else:
        running = np.concatenate([np.maximum.accumulate(end[group == k]) for k in range(int(group[-1]) + 1)])
    before = np.empty(n, np.int64)
    before[0] = _NONE
    before[1:] = running[:-1]
    first = np.concatenate([[True], group[1:] != group[:-1]])
    before[first] = _NONE
    before = np.maximum(before, carry[group])
    last = np.append(np.flatnonzero(first)[1:] - 1, n - 1)
    carry[group[last]] = np.maximum(carry[group[last]], running[last])
    return np.clip(end - np.maximum(start, before), 0, None)


class StepAccumulator:
    """Per-interval sums of one process's kernels, copies, memsets and API calls."""

    def __init__(self, bounds: Boundaries, index: ExportIndex) -> None:
        self.bounds = bounds
        self.corr = bounds.corr
        n = len(bounds.corr) + 1
        self.n = n

        def zeros() -> np.ndarray:
            return np.zeros(n, np.int64)

        self.kernels, self.kernel_ns, self.kernel_busy, self.instrumentation = zeros(), zeros(), zeros(), zeros()
        self.graph_kernels, self.graph_executions, self.memsets = zeros(), zeros(), zeros()
        self.calls, self.launch_ns, self.sync_ns, self.other_ns, self.graph_launches = (zeros() for _ in range(5))
        self.first_kernel = np.full(n, _LATEST, np.int64)
        self.first_gpu = np.full(n, _LATEST, np.int64)
        self.gpu_end = np.full(n, _NONE, np.int64)
        self.host_ref = np.full(n, -1, np.int64)
        self._carry = np.full(n, _NONE, np.int64)
        self._run_carry = np.full(1, _NONE, np.int64)
        self.run_busy = 0
        self.copies: dict[int, list[np.ndarray]] = {}  # class code -> [count, bytes, ns]
        self._pageable_dtoh: list[np.ndarray] = []
        # kernel names: dense index per shortName id, the graph executions last
        names = sorted(index.kernels)
        self.names = [index.kernels[i] for i in names] + [GRAPH_NAME]
        self._name = _lut({i: k for k, i in enumerate(names)}, len(names))
        self._instrumentation = np.array(sorted(index.instrumentation_ids), np.int64)
        self.name_steps = np.zeros(len(self.names), np.int64)
        self.name_count = np.zeros(len(self.names), np.int64)
        self.name_ns = np.zeros(len(self.names), np.int64)
        self._name_last = np.full(len(self.names), -1, np.int64)
        self._kind = _lut({i: _KINDS.index(k) for i, k in index.copy_kind.items()}, 3)
        self._memory = _lut({i: _MEMORY.index(m) for i, m in index.memory.items()}, 3)
        dtoh, pageable = _KINDS.index("dtoh"), _MEMORY.index("pageable")
        self._pageable_code = dtoh * len(_MEMORY) + pageable
        api_class = {i: 1 for i in index.launch_ids} | {i: 2 for i in index.wait_ids}
        self._api = _lut(api_class, 0)
        self._graph_launch = np.array(sorted(index.graph_launch_ids), np.int64)

    def interval(self, corr: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.corr, corr, side="left")

    def _gpu(self, grp: _Groups, start: np.ndarray, end: np.ndarray) -> None:
        if len(grp.ug):
            self.first_gpu[grp.ug] = np.minimum(self.first_gpu[grp.ug], grp.min(start))
            self.gpu_end[grp.ug] = np.maximum(self.gpu_end[grp.ug], grp.max(end))

    def add_kernels(self, chunk: np.ndarray) -> None:
        """Rows (start, end, corr, shortName id, graph flag) sorted by start."""
        start, end, corr, name, graph = chunk.T
        g = self.interval(corr)
        own = np.isin(name, self._instrumentation)
        if own.any():
            self.instrumentation += np.bincount(g[own], minlength=self.n)
            keep = ~own
            start, end, corr, name, graph, g = start[keep], end[keep], corr[keep], name[keep], graph[keep], g[keep]
        if len(g) == 0:
            return
        grp = _Groups(g)
        ug = grp.ug
        self.kernels[ug] += grp.count()
        self.kernel_ns[ug] += grp.sum(end - start)
        self.graph_kernels[ug] += grp.sum((graph == 1).astype(np.int64))
        self.graph_executions[ug] += grp.sum((graph == 2).astype(np.int64))
        self.first_kernel[ug] = np.minimum(self.first_kernel[ug], grp.min(start))
        self._gpu(grp, start, end)
        o = grp.order
        dense = np.cumsum(np.concatenate([[0], (grp.sorted_g[1:] != grp.sorted_g[:-1]).astype(np.int64)]))
        local_carry = self._carry[ug].copy()
        added = _union_add(start[o], end[o], dense, local_carry)
        self._carry[ug] = local_carry
        self.kernel_busy[ug] += np.add.reduceat(added, grp.at)
        in_steps = (g >= 1) & (g < self.n - 1)
        self.run_busy += int(
            _union_add(start[in_steps], end[in_steps], np.zeros(int(in_steps.sum()), np.int64), self._run_carry).sum()
        )
        self._add_names(np.where(graph == 2, len(self.names) - 1, _look(self._name, name)), g, end - start, in_steps)

    def _add_names(self, name: np.ndarray, g: np.ndarray, ns: np.ndarray, in_steps: np.ndarray) -> None:
        name, g, ns = name[in_steps], g[in_steps], ns[in_steps]
        if len(name) == 0:
            return
        m = len(self.names)
        self.name_count += np.bincount(name, minlength=m)
        self.name_ns += np.bincount(name, weights=ns, minlength=m).round().astype(np.int64)
        pairs = np.unique(name * self.n + g)
        pair_name, pair_g = pairs // self.n, pairs % self.n
        fresh = pair_g != self._name_last[pair_name]  # a step seen at the end of the previous chunk
        self.name_steps += np.bincount(pair_name[fresh], minlength=m)
        np.maximum.at(self._name_last, pair_name, pair_g)

    def add_copies(self, chunk: np.ndarray) -> None:
        """Rows (start, end, corr, copyKind, srcKind, dstKind, bytes), any order."""
        start, end, corr, kind, src, dst, nbytes = chunk.T
        g = self.interval(corr)
        k = _look(self._kind, kind)
        host_side = np.where(k == _KINDS.index("htod"), src, dst)
        mem = np.where(k == _KINDS.index("dtod"), _MEMORY.index("device"), _look(self._memory, host_side))
        code = k * len(_MEMORY) + mem
        self._gpu(_Groups(g), start, end)
        for c in np.unique(code):
            rows = code == c
            grp = _Groups(g[rows])
            cols = self.copies.setdefault(int(c), [np.zeros(self.n, np.int64) for _ in range(3)])
            cols[0][grp.ug] += grp.count()
            cols[1][grp.ug] += grp.sum(nbytes[rows])
            cols[2][grp.ug] += grp.sum((end - start)[rows])
        pageable = code == self._pageable_code
        if pageable.any():
            self._pageable_dtoh.append(corr[pageable])

    def add_memsets(self, chunk: np.ndarray) -> None:
        """Rows (start, end, corr), any order."""
        start, end, corr = chunk.T
        grp = _Groups(self.interval(corr))
        self.memsets[grp.ug] += grp.count()
        self._gpu(grp, start, end)

    def add_calls(self, chunk: np.ndarray) -> None:
        """Rows (start, end, corr, nameId), any order; after the copies (a pageable DtoH launch is a wait)."""
        start, end, corr, name = chunk.T
        g = self.interval(corr)
        cls = _look(self._api, name)
        if self._pageable_dtoh:
            cls = np.where(np.isin(corr, np.concatenate(self._pageable_dtoh)), 2, cls)
        grp = _Groups(g)
        ug, dur = grp.ug, end - start
        self.calls[ug] += grp.count()
        self.other_ns[ug] += grp.sum(np.where(cls == 0, dur, 0))
        self.launch_ns[ug] += grp.sum(np.where(cls == 1, dur, 0))
        self.sync_ns[ug] += grp.sum(np.where(cls == 2, dur, 0))
        self.graph_launches[ug] += grp.sum(np.isin(name, self._graph_launch).astype(np.int64))
        marker = (g < len(self.corr)) & (self.corr[np.minimum(g, len(self.corr) - 1)] == corr)
        self.host_ref[g[marker]] = start[marker]

    # ------------------------------------------------------------------ the derivation

    def _copy_label(self, code: int) -> str:
        return f"{_KINDS[code // len(_MEMORY)]}_{_MEMORY[code % len(_MEMORY)]}"

    def _copy_classes(self, steps: slice) -> dict[str, CopyColumns]:
        """The steps' copies by catalog.COPY_CLASSES (every other kind and memory is `other`), where any."""
        summed: dict[str, list[np.ndarray]] = {}
        for code, cols in sorted(self.copies.items()):
            label = self._copy_label(code)
            label = label if label in _CLASSES else "other"
            into = summed.setdefault(label, [np.zeros(len(cols[0][steps]), np.int64) for _ in range(3)])
            for total, a in zip(into, cols, strict=True):
                total += a[steps]
        return {c: CopyColumns(*summed[c]) for c in _CLASSES if c in summed and summed[c][0].any()}

    def derive(self) -> tuple[StepTable, RunSummary]:
        """The steps (intervals 1..n-1) and the run over them (formulas in result.py)."""
        steps = slice(1, self.n - 1)
        host = np.where(self.bounds.host_ns >= 0, self.bounds.host_ns, self.host_ref[: self.n - 1])
        gpu_end = self.gpu_end.copy()
        if (self.bounds.opening is not None or gpu_end[0] == _NONE) and self.n > 2:
            # An NVTX range is a whole step: the first one starts at its own first GPU record.
            gpu_end[0] = self.first_gpu[1] if self.first_gpu[1] != _LATEST else _NONE
        end = gpu_end.astype(np.float64)
        end[gpu_end == _NONE] = np.nan
        period = end[1:-1] - end[:-2]
        host_f = np.where(host >= 0, host, np.nan).astype(np.float64)
        first_kernel = np.where(self.first_kernel == _LATEST, np.nan, self.first_kernel.astype(np.float64))
        bubble = np.full(self.n - 2, np.nan)
        if self.n > 3:
            bubble[:-1] = np.maximum(first_kernel[2:-1] - end[1:-2], 0.0)
        table = StepTable(
            gpu_end_ns=np.where(gpu_end[steps] == _NONE, -1, gpu_end[steps]),
            gpu_period_ns=period,
            host_end_ns=host[1:].copy(),
            host_period_ns=np.diff(host_f),
            kernels=self.kernels[steps],
            kernel_ns=self.kernel_ns[steps],
            kernel_busy_ns=self.kernel_busy[steps],
            kernel_idle_ns=np.maximum(period - self.kernel_busy[steps], 0.0),
            first_kernel_ns=np.where(self.first_kernel[steps] == _LATEST, -1, self.first_kernel[steps]),
            bubble_ns=bubble,
            memsets=self.memsets[steps],
            api_calls=self.calls[steps],
            launch_api_ns=self.launch_ns[steps],
            sync_api_ns=self.sync_ns[steps],
            other_api_ns=self.other_ns[steps],
            graph_launches=self.graph_launches[steps],
            graph_kernels=self.graph_kernels[steps],
            graph_executions=self.graph_executions[steps],
            instrumentation_kernels=self.instrumentation[steps],
            copies=self._copy_classes(steps),
        )
        return table, self._run(table, None if gpu_end[0] == _NONE else int(gpu_end[0]))

    def _run(self, t: StepTable, start_ns: int | None) -> RunSummary:
        n = len(t)
        valid = t.gpu_end_ns >= 0
        window = int(t.gpu_end_ns[valid].max()) - start_ns if valid.any() and start_ns is not None else 0
        period = t.gpu_period_ns
        defined = ~np.isnan(period)
        long = defined & (period > LONG_STEP * np.median(period[defined])) if defined.any() else defined
        steady = defined & ~long
        outside = {
            "kernels_before": int(self.kernels[0]),
            "kernels_after": int(self.kernels[-1]),
            "copies_before": int(sum(c[0][0] for c in self.copies.values())),
            "copies_after": int(sum(c[0][-1] for c in self.copies.values())),
        }
        return RunSummary(
            steps=n,
            window_ns=max(window, 0),
            kernel_busy_ns=self.run_busy,
            long_steps=int(long.sum()),
            steady_busy_ns=int(t.kernel_busy_ns[steady].sum()),
            steady_window_ns=int(period[steady].sum()),
            step_time_ns=Summary.of(t.gpu_period_ns),
            host_step_time_ns=Summary.of(t.host_period_ns),
            bubble_ns=Summary.of(t.bubble_ns),
            kernel_busy_per_step=Summary.of(t.kernel_busy),
            kernels_per_step=Summary.of(t.kernels.astype(np.float64)),
            gpu_kernel_ns=Summary.of(t.kernel_busy_ns.astype(np.float64)),
            launch_api_ns=Summary.of(t.launch_api_ns.astype(np.float64)),
            sync_api_ns=Summary.of(t.sync_api_ns.astype(np.float64)),
            other_api_ns=Summary.of(t.other_api_ns.astype(np.float64)),
            graph_launches_per_step=Summary.of(t.graph_launches.astype(np.float64)),
            copies={
                c: CopyPerStep.of(t.copies[c], n) if c in t.copies else CopyPerStep(0, 0.0, 0.0, 0.0) for c in _CLASSES
            },
            pageable_dtoh_steps=int((t.pageable_dtoh > 0).sum()),
            graph_launches=int(t.graph_launches.sum()),
            graph_kernels=int(t.graph_kernels.sum()),
            outside=outside,
            repeats=self._repeats(t),
        )

    def _repeats(self, t: StepTable) -> tuple[Repeated, ...]:
        """Kernels (by name) and kinds of copy found in at least REPEAT_SHARE of the steps."""
        n = len(t)
        if n == 0:
            return ()
        out = []
        for label, c in t.copies.items():
            have = int((c.count > 0).sum())
            if have >= REPEAT_SHARE * n:
                out.append(
                    Repeated("copy", label, have, have / n, *(float(a.sum() / n) for a in (c.count, c.ns, c.bytes)))
                )
        kernels = []
        for k in np.flatnonzero(np.minimum(self.name_steps, n) >= REPEAT_SHARE * n):
            have = int(min(self.name_steps[k], n))
            kernels.append(
                Repeated(
                    "kernel", self.names[k], have, have / n, float(self.name_count[k] / n), float(self.name_ns[k] / n)
                )
            )
        kernels.sort(key=lambda r: -r.ns_per_step)
        return (*out, *kernels[:TOP_REPEATS])
