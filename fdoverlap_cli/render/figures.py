"""One PNG of a run: the per-step hidden fraction of each path, the exposed host time per step of each path
(stacked by what the host was doing, the bubble drawn on the same axis), and a Gantt chart of a few steps.

matplotlib is imported when a figure is drawn (never at CLI start) and drawn off-screen (Agg).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fdoverlap_cli.fileio import atomic_open
from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.metrics import PathMetrics
from fdoverlap_cli.measure.records import Kind, Span, SpanTable, Track
from fdoverlap_cli.measure.schema import EXPOSED, OTHER
from fdoverlap_cli.render.cells import NOT_MEASURABLE_ON_CPU, value

MANY_STEPS = 200  # beyond this many steps, per-step lines are drawn faint under a rolling mean
GANTT_STEPS = 4  # steps shown by default, from the middle of the measured window
HOST_ROW_KINDS = (Kind.INSERT, Kind.PREPROCESS, Kind.SAVE, Kind.POSTPROCESS)
COLORS = {
    Kind.INSERT: "#9e9e9e",
    Kind.PREPROCESS: "#4caf50",
    Kind.SAVE: "#e53935",
    Kind.POSTPROCESS: "#8e24aa",
    Kind.COMPUTE: ("#1e88e5", "#64b5f6"),  # alternating by step, so neighbouring steps stay apart
    Kind.COPY: "#fb8c00",
    Kind.ITERATION: ("#cfd8dc", "#eceff1"),
}
PATH_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a")
# The exposed host time's categories (schema.EXPOSED); a category without a colour here gets one of _SPARE.
EXPOSED_COLORS = {
    Kind.INSERT: COLORS[Kind.INSERT],
    Kind.PREPROCESS: COLORS[Kind.PREPROCESS],
    Kind.POSTPROCESS: COLORS[Kind.POSTPROCESS],
    Kind.SAVE: COLORS[Kind.SAVE],
    Kind.BACKPRESSURE: "#6d1b1b",
    Kind.READBACK: "#fb8c00",
    Kind.EVENT_WAIT: "#f8bbd0",
    Kind.WAIT: "#8d6e63",
    OTHER: "#cfd8dc",
}
_SPARE = ("#00897b", "#fdd835", "#5e35b1", "#3949ab", "#c0ca33")
ITERATION_ROW, HOST_ROW = "iteration", "host stages"
# The catalog metrics each per-step plot's legend shows for a path.
_LEGENDS = {"hidden": ("hidden", "hidden_per_step.p50"), "bubble_ns": ("bubble_ns.mean", "exposed_share")}


def default_gantt_steps(metrics: PathMetrics) -> tuple[int, int] | None:
    """GANTT_STEPS steps from the middle of the measured window (fewer if the run is shorter)."""
    if metrics.first_step is None or metrics.last_step is None:
        return None
    first = max(metrics.first_step, (metrics.first_step + metrics.last_step) // 2 - GANTT_STEPS // 2 + 1)
    return first, min(metrics.last_step, first + GANTT_STEPS - 1)


def _time_unit(width_ns: float) -> tuple[str, float]:
    return ("ms", 1e6) if width_ns > 20e6 else ("µs", 1e3)


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over the `window` steps centred on each step, NaNs (undefined steps) left out."""
    defined = ~np.isnan(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(defined, values, 0.0), kernel, mode="same")
    count = np.convolve(defined.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _legend(name: str, m: PathMetrics, shown: tuple[str, ...]) -> str:
    """`name: label value, label value` for the catalog metrics `shown` that the path has."""
    doc = m.to_dict(per_step=False)
    parts = [(catalog.path_metric(k), catalog.path_metric(k).value(doc)) for k in shown]
    shown_parts = [f"{metric.label} {value(v, metric.unit)}" for metric, v in parts if v is not None]
    return ", ".join([name] * bool(name) + shown_parts)


def _per_step(ax: Any, paths: Mapping[str, tuple[PathMetrics, Any]], column: str, scale: float) -> None:
    for color, (name, (m, _)) in zip(PATH_COLORS, paths.items(), strict=False):
        steps, values = m.per_step.step, getattr(m.per_step, column) / scale
        label = _legend(name, m, _LEGENDS[column])
        if len(steps) <= MANY_STEPS:
            ax.plot(steps, values, color=color, lw=1.4, marker="o", ms=3, label=label)
            continue
        window = len(steps) // MANY_STEPS
        ax.plot(steps, values, color=color, lw=0.5, alpha=0.3)
        ax.plot(
            steps, _rolling_mean(values, window), color=color, lw=1.6, label=f"{label}; line: mean of {window} steps"
        )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", ncols=len(paths), fontsize=8, framealpha=0.9)  # in the headroom above the data
    ax.set_xlabel("step")


def _gantt_spans(spans: Sequence[Span] | SpanTable, steps: tuple[int, int]) -> tuple[list[Span], int, int]:
    """(spans, t0, t1): the spans overlapping [t0, t1), the time the chosen steps take (so save(k-1) shows
    inside iteration k)."""
    table = spans if isinstance(spans, SpanTable) else SpanTable.from_spans(spans)
    chosen = (table.step >= steps[0]) & (table.step <= steps[1])
    if not chosen.any():
        return [], 0, 0
    t0, t1 = int(table.start_ns[chosen].min()), int(table.end_ns[chosen].max())
    return table.select((table.end_ns > t0) & (table.start_ns < t1)).to_spans(), t0, t1


def _rows(spans: Sequence[Span]) -> list[str]:
    gpu = sorted({s.track for s in spans if s.kind in Kind.GPU}, key=lambda t: (t != Track.COMPUTE_STREAM, t))
    return [ITERATION_ROW, HOST_ROW, *gpu]


def _row_of(s: Span) -> str | None:
    if s.kind == Kind.ITERATION:
        return ITERATION_ROW
    if s.kind in HOST_ROW_KINDS:
        return HOST_ROW
    return s.track if s.kind in Kind.GPU else None


def _gantt(
    ax: Any, name: str, shown: Sequence[Span], t0: int, steps: tuple[int, int], width_ns: int, note: str = ""
) -> None:
    from matplotlib.patches import Patch

    end = t0 + width_ns
    unit, scale = _time_unit(width_ns)
    rows = _rows(shown)
    y = {row: len(rows) - 1 - i for i, row in enumerate(rows)}
    label_min = 0.035 * width_ns  # label bars wide enough to hold a step number
    for s in shown:
        row = _row_of(s)
        if row is None:
            continue
        color = COLORS[s.kind]
        if isinstance(color, tuple):
            color = color[s.step % 2]
        a, b = max(s.start_ns, t0), min(s.end_ns, end)  # clipped to the chart, so labels stay inside
        left, width = (a - t0) / scale, (b - a) / scale
        height = 0.5 if row == ITERATION_ROW else 0.7
        ax.barh(y[row], width, left=left, height=height, color=color, edgecolor="white", linewidth=0.5)
        if b - a >= label_min:
            text = f"iteration {s.step}" if row == ITERATION_ROW else str(s.step)
            dark = s.kind in (Kind.COMPUTE, Kind.SAVE, Kind.POSTPROCESS, Kind.PREPROCESS) and s.step % 2 == 0
            text_color = "white" if dark else "black"
            ax.text(left + width / 2, y[row], text, ha="center", va="center", fontsize=7, color=text_color)
    for s in shown:  # waits on top of the host stages they interrupt
        if s.kind in Kind.WAITS:
            a, b = max(s.start_ns, t0), min(s.end_ns, end)
            ax.barh(
                y[HOST_ROW],
                (b - a) / scale,
                left=(a - t0) / scale,
                height=0.7,
                fill=False,
                hatch="////",
                edgecolor="#5d4037",
                lw=0,
            )
    ax.set_yticks([y[r] for r in rows], rows, fontsize=8)
    ax.set_xlim(0, width_ns / scale)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(f"time since the first span of step {steps[0]} ({unit})")
    ax.set_title(f"{name}: steps {steps[0]}–{steps[1]} (labels: step number){note}", fontsize=10, loc="left")
    ax.grid(axis="x", alpha=0.3)
    if not shown:
        ax.text(0.5, 0.5, "no spans in these steps", transform=ax.transAxes, ha="center", va="center")
    legend = [Patch(color=COLORS[k], label=k) for k in HOST_ROW_KINDS]
    legend += [
        Patch(facecolor="white", edgecolor="#5d4037", hatch="////", label=Kind.WAIT),
        Patch(color=COLORS[Kind.COMPUTE][0], label=Kind.COMPUTE),
        Patch(color=COLORS[Kind.COPY], label=Kind.COPY),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)


def _exposed_colors() -> dict[str, str]:
    spare = iter(_SPARE)
    return {category: EXPOSED_COLORS.get(category) or next(spare, "#9e9e9e") for category, _ in EXPOSED}


def _binned(steps: np.ndarray, columns: dict[str, np.ndarray], bins: int) -> tuple[np.ndarray, dict, float]:
    """(bar positions, each column's mean per bin, bar width): one bar per step, or `bins` bars of many."""
    if len(steps) <= bins:
        return steps.astype(np.float64), columns, 0.8
    edges = np.linspace(0, len(steps), bins + 1).astype(int)
    bounds = list(itertools.pairwise(edges))
    centres = np.array([steps[a:b].mean() for a, b in bounds])
    means = {
        name: np.array([np.nanmean(v[a:b]) if (~np.isnan(v[a:b])).any() else np.nan for a, b in bounds])
        for name, v in columns.items()
    }
    return centres, means, 0.9 * (steps[-1] - steps[0] + 1) / bins


def _not_measurable(ax: Any) -> None:
    ax.set_yticks([])
    ax.text(0.5, 0.5, NOT_MEASURABLE_ON_CPU, transform=ax.transAxes, ha="center", va="center", color="#616161")


def _exposed(ax: Any, name: str, color: str, m: PathMetrics) -> None:
    """Stacked bars per step of the exposed host time by category, and the bubble as a line on the same axis."""
    exposed = catalog.path_metric("per_step.exposed_ns")
    ax.set_title(
        f"{name}: {exposed.label} per step, by what the host was doing (bars; they sum to the bubble, the line)",
        fontsize=10,
        loc="left",
    )
    ax.set_ylabel("µs")
    ax.grid(axis="y", alpha=0.3)
    if not m.measurable:
        _not_measurable(ax)
        return
    steps = m.per_step.step
    if len(steps) == 0:
        ax.text(0.5, 0.5, "no measured step", transform=ax.transAxes, ha="center", va="center")
        return
    none = np.full(len(steps), np.nan)
    columns = {c: m.per_step.exposed_ns.get(c, none) / 1e3 for c, _ in EXPOSED}
    x, columns, width = _binned(steps, {**columns, "bubble": m.per_step.bubble_ns / 1e3}, MANY_STEPS)
    bubble = columns.pop("bubble")
    bottom = np.zeros(len(x))
    labels = dict(EXPOSED)
    for category, colour in _exposed_colors().items():
        height = np.nan_to_num(columns[category])
        if height.any():
            ax.bar(x, height, width, bottom=bottom, color=colour, label=labels[category], lw=0)
            bottom += height
    line = ax.plot(x, bubble, color=color, lw=1.0, marker="." if len(x) <= 60 else None, ms=3)
    line[0].set_label(_legend("", m, _LEGENDS["bubble_ns"]))
    ax.legend(loc="upper left", ncols=5, fontsize=7, framealpha=0.9)


def plot_run(
    paths: Mapping[str, tuple[PathMetrics, Sequence[Span] | SpanTable]],
    out: str | os.PathLike[str],
    gantt_steps: tuple[int, int] | None = None,
) -> None:
    """Write one PNG to `out` (atomically): the hidden fraction per step of every path, the exposed host time
    per step of each path (its bubble on the same axis), then a Gantt per path.

    `gantt_steps` = (first, last) steps of the Gantt charts; default: 4 steps from the middle of the
    first path's measured window. A path without the GPU's timing (the CPU) says so where its numbers would be.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not paths:
        raise ValueError("plot_run needs at least one path")
    steps = gantt_steps or default_gantt_steps(next(iter(paths.values()))[0]) or (0, 0)
    windows = [_gantt_spans(spans, steps) for _, spans in paths.values()]
    width_ns = max((t1 - t0 for _, t0, t1 in windows), default=0) or 1

    n = len(paths)
    fig = Figure(figsize=(13, 3.4 + 4.0 * n), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + 2 * n, 1, height_ratios=[2.2] + [2.2] * n + [1.6] * n)
    hidden_ax = fig.add_subplot(grid[0])

    hidden = catalog.path_metric("per_step.hidden")
    _per_step(hidden_ax, paths, "hidden", 1.0)
    hidden_ax.set_ylim(-0.03, 1.3)
    hidden_ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    hidden_ax.yaxis.set_major_formatter("{x:.0%}")
    hidden_ax.set_ylabel(hidden.label)
    hidden_ax.set_title(f"{hidden.label}, {hidden.definition}", fontsize=10, loc="left")
    if not any(m.measurable for m, _ in paths.values()):
        _not_measurable(hidden_ax)
    measured = [m for m, _ in paths.values() if m.first_step is not None]
    if measured:
        hidden_ax.set_xlim(min(m.first_step for m in measured) - 0.5, max(m.last_step for m in measured) + 0.5)
    exposed_axes = []
    for i, (color, (name, (m, _))) in enumerate(zip(PATH_COLORS * n, paths.items(), strict=False)):
        ax = fig.add_subplot(grid[1 + i], sharex=hidden_ax, sharey=exposed_axes[0] if exposed_axes else None)
        _exposed(ax, name, color, m)
        exposed_axes.append(ax)
    top = max((np.nanmax(m.per_step.bubble_ns, initial=0) for m, _ in paths.values() if m.measurable), default=0)
    exposed_axes[0].set_ylim(0, max(top / 1e3, 1e-3) * 1.4)  # headroom for the legend; the axes share it
    for ax in (hidden_ax, *exposed_axes):
        ax.axvspan(steps[0] - 0.5, steps[1] + 0.5, color="#ffe082", alpha=0.5, lw=0, label="_gantt", zorder=0)
    exposed_axes[-1].set_xlabel("step")

    for i, (name, (shown, t0, _)) in enumerate(zip(paths, windows, strict=True)):
        cpu = "" if paths[name][0].measurable else " · on the CPU every copy and wait is synchronous"
        _gantt(fig.add_subplot(grid[1 + n + i]), name, shown, t0, steps, width_ns, cpu)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with atomic_open(out, "wb") as f:
        f.write(buf.getvalue())
