"""The figure of a run (PNG or SVG): the per-step hidden fraction of each path, the exposed host time per
step of each path (stacked by what the host was doing, the bubble drawn on the same axis), and a Gantt chart
of a few steps; a title naming the trace, model, device and speedup.

Drawn to be read at the width of a review comment (~800 px): 8 inches wide, one panel per row, 9-pt text
or larger, every legend in a row of its own under its panels (nothing drawn is left out of a legend).
Without the GPU's timing (the CPU) the per-step panels are one line naming what cannot be measured.
matplotlib is imported when a figure is drawn (never at CLI start) and drawn off-screen (Agg); SVG text
is drawn as paths, so the file needs no font.
"""

from __future__ import annotations

import io
import itertools
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fdoverlap_cli.fileio import atomic_open
from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.metrics import PathMetrics
from fdoverlap_cli.measure.records import Kind, Span, SpanTable
from fdoverlap_cli.measure.schema import EXPOSED, OTHER
from fdoverlap_cli.render import gantt
from fdoverlap_cli.render.cells import NOT_MEASURABLE_ON_CPU, value
from fdoverlap_cli.render.gantt import COLORS, WIDTH_IN

FORMATS = ("png", "svg")

PNG_DPI = 150  # 1,200 px wide, sharp when shown at 800
FONTS = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "svg.fonttype": "path",  # text drawn as outlines: the SVG needs no font
    "svg.hashsalt": "fdoverlap",  # the same figure, the same file
}
TITLE_CHARS = 80  # a line of the bold title across the figure's width
LEGEND_ROW_IN = 0.24  # height of one row of a legend
GANTT_BAND = "#ffe082"  # the steps the Gantt charts show, behind the per-step panels
MANY_STEPS = 200  # beyond this many steps, per-step lines are drawn faint under a rolling mean
GANTT_STEPS = 4  # steps shown by default, from the middle of the measured window
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
# The catalog metrics each per-step plot's legend shows for a path.
_LEGENDS = {"hidden": ("hidden", "hidden_per_step.p50"), "bubble_ns": ("bubble_ns.mean", "exposed_share")}


def default_gantt_steps(metrics: PathMetrics) -> tuple[int, int] | None:
    """GANTT_STEPS steps from the middle of the measured window (fewer if the run is shorter)."""
    if metrics.first_step is None or metrics.last_step is None:
        return None
    first = max(metrics.first_step, (metrics.first_step + metrics.last_step) // 2 - GANTT_STEPS // 2 + 1)
    return first, min(metrics.last_step, first + GANTT_STEPS - 1)


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


def _per_step(ax: Any, paths: Mapping[str, tuple[PathMetrics, Any]], column: str, scale: float) -> list[Any]:
    """One line per path of the per-step `column`; returns the lines (their labels carry the path's summary)."""
    lines = []
    for color, (name, (m, _)) in zip(PATH_COLORS, paths.items(), strict=False):
        steps, values = m.per_step.step, getattr(m.per_step, column) / scale
        label = _legend(name, m, _LEGENDS[column])
        if len(steps) <= MANY_STEPS:
            lines += ax.plot(steps, values, color=color, lw=1.6, marker="o", ms=3.5, label=label)
            continue
        window = max(2, round(len(steps) / (MANY_STEPS / 2)))  # a mean of at least two steps
        ax.plot(steps, values, color=color, lw=0.5, alpha=0.3)
        lines += ax.plot(
            steps, _rolling_mean(values, window), color=color, lw=1.8, label=f"{label}; line: mean of {window} steps"
        )
    ax.grid(alpha=0.3)
    return lines


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


def _exposed(ax: Any, name: str, color: str, m: PathMetrics) -> set[str]:
    """Stacked bars per step of the exposed host time by category, and the bubble as a line on the same axis;
    returns the categories drawn."""
    exposed = catalog.path_metric("per_step.exposed_ns")
    summary = _legend("", m, _LEGENDS["bubble_ns"])
    ax.set_title(f"{name}: {exposed.label} per step" + (f" · {summary}" if summary else ""), loc="left")
    ax.set_ylabel("µs")
    ax.grid(axis="y", alpha=0.3)
    if not m.measurable:
        _not_measurable(ax)
        return set()
    steps = m.per_step.step
    if len(steps) == 0:
        ax.text(0.5, 0.5, "no measured step", transform=ax.transAxes, ha="center", va="center")
        return set()
    none = np.full(len(steps), np.nan)
    columns = {c: m.per_step.exposed_ns.get(c, none) / 1e3 for c, _ in EXPOSED}
    x, columns, width = _binned(steps, {**columns, "bubble": m.per_step.bubble_ns / 1e3}, MANY_STEPS)
    bubble = columns.pop("bubble")
    bottom = np.zeros(len(x))
    drawn = set()
    for category, colour in _exposed_colors().items():
        height = np.nan_to_num(columns[category])
        if height.any():
            ax.bar(x, height, width, bottom=bottom, color=colour, lw=0)
            bottom += height
            drawn.add(category)
    ax.plot(x, bubble, color=color, lw=1.2, marker="." if len(x) <= 60 else None, ms=4)
    return drawn


def _wrap(line: str) -> str:
    """A title line in lines of at most TITLE_CHARS, broken between its ` · ` parts where it can."""
    lines: list[str] = []
    for part in line.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= TITLE_CHARS:
            lines[-1] += " · " + part
        else:
            lines += textwrap.wrap(part, TITLE_CHARS) or [""]
    return "\n".join(lines)


def _drawn_categories(paths: Iterable[tuple[PathMetrics, Any]]) -> set[str]:
    """The exposed categories any measurable path has time in (what the bars and their legend show)."""
    return {c for m, _ in paths if m.measurable for c, v in m.per_step.exposed_ns.items() if np.nansum(v) > 0}


def _not_measurable(ax: Any) -> None:
    ax.set_yticks([])
    ax.text(0.5, 0.5, NOT_MEASURABLE_ON_CPU, transform=ax.transAxes, ha="center", va="center", color="#616161")


def _legend_row(ax: Any, handles: list[Any], labels: list[str], ncols: int, title: str | None = None) -> None:
    """A legend in an axes of its own (a row of the figure's grid), left-aligned."""
    from matplotlib.legend_handler import HandlerTuple

    ax.axis("off")
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            ncols=ncols,
            frameon=False,
            title=title,
            alignment="left",
            handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
            borderaxespad=0,
            columnspacing=1.2,
        )


def _legend_height(entries: int, ncols: int, title: bool = False) -> float:
    return LEGEND_ROW_IN * (-(-entries // ncols) + title) + 0.08


def _cpu_line(ax: Any) -> None:
    """The per-step panels of a run without the GPU's timing: one line naming what they would show."""
    shown = [m.label for m in catalog.not_measurable(catalog.FIGURE) if m.per_step]
    ax.axis("off")
    line = f"per step: {', '.join(shown)}: {NOT_MEASURABLE_ON_CPU}\n(every copy and wait is synchronous there)"
    ax.text(0, 0.5, line, transform=ax.transAxes, ha="left", va="center", color="#616161").set_in_layout(False)


def draw_run(
    paths: Mapping[str, tuple[PathMetrics, Sequence[Span] | SpanTable]],
    gantt_steps: tuple[int, int] | None = None,
    title: str = "",
) -> Any:
    """The figure of a run (a matplotlib Figure, not yet written): the hidden fraction per step of every
    path, the exposed host time per step of each path (its bubble on the same axis), then a Gantt per path.

    `gantt_steps` = (first, last) steps of the Gantt charts; default: 4 steps from the middle of the
    first path's measured window. A path without the GPU's timing (the CPU) says so where its numbers would be.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not paths:
        raise ValueError("plot_run needs at least one path")
    title = "\n".join(_wrap(line) for line in title.split("\n")) if title else ""
    steps = gantt_steps or default_gantt_steps(next(iter(paths.values()))[0]) or (0, 0)
    windows = [gantt.gantt_spans(spans, steps) for _, spans in paths.values()]
    width_ns = max((t1 - t0 for _, t0, t1 in windows), default=0) or 1
    n = len(paths)
    measurable = any(m.measurable for m, _ in paths.values())
    gantt_handles, gantt_labels = gantt.legend()
    gantt_heights = [0.75 + 0.38 * len(gantt.rows_of(shown)) for shown, _, _ in windows]
    if measurable:
        categories = len(_drawn_categories(paths.values()))
        heights = [2.3, _legend_height(n + 1, 1), *[2.0] * n, _legend_height(categories + n, 3, title=True)]
        heights += [*gantt_heights, _legend_height(len(gantt_labels), 2)]
    else:
        heights = [0.5, *gantt_heights, _legend_height(len(gantt_labels), 2)]

    with matplotlib.rc_context(FONTS):
        fig = Figure(
            figsize=(WIDTH_IN, sum(heights) + (0.3 * (1 + title.count("\n")) if title else 0) + 0.3),
            layout="constrained",
        )
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        row = 0
        if measurable:
            row = _per_step_panels(fig, grid, paths, steps)
        else:
            _cpu_line(fig.add_subplot(grid[0]))
            row = 1
        for i, (name, (shown, t0, _)) in enumerate(zip(paths, windows, strict=True)):
            cpu = "" if paths[name][0].measurable else " · on the CPU every copy and wait is synchronous"
            gantt.gantt(fig.add_subplot(grid[row + i]), name, shown, t0, steps, width_ns, cpu)
        _legend_row(fig.add_subplot(grid[row + n]), gantt_handles, gantt_labels, 2)
    return fig


def _per_step_panels(fig: Any, grid: Any, paths: Mapping[str, tuple[PathMetrics, Any]], steps: tuple[int, int]) -> int:
    """The hidden fraction and the exposed host time per step, each with its legend; returns the next grid row."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(paths)
    hidden_ax = fig.add_subplot(grid[0])
    hidden = catalog.path_metric("per_step.hidden")
    lines = _per_step(hidden_ax, paths, "hidden", 1.0)
    hidden_ax.set_ylim(-0.03, 1.05)
    hidden_ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    hidden_ax.yaxis.set_major_formatter("{x:.0%}")
    hidden_ax.set_ylabel(hidden.label)
    hidden_ax.set_title(f"{hidden.label}, {hidden.definition}", loc="left")
    hidden_ax.set_xlabel("step")
    measured = [m for m, _ in paths.values() if m.first_step is not None]
    if measured:
        hidden_ax.set_xlim(min(m.first_step for m in measured) - 0.5, max(m.last_step for m in measured) + 0.5)
    band = Patch(color=GANTT_BAND, alpha=0.6, label=f"steps {steps[0]}–{steps[1]}: the Gantt charts below")
    _legend_row(fig.add_subplot(grid[1]), [*lines, band], [*(ln.get_label() for ln in lines), band.get_label()], 1)

    exposed_axes, drawn = [], set()
    for i, (color, (name, (m, _))) in enumerate(zip(PATH_COLORS * n, paths.items(), strict=False)):
        ax = fig.add_subplot(grid[2 + i], sharex=hidden_ax, sharey=exposed_axes[0] if exposed_axes else None)
        drawn |= _exposed(ax, name, color, m)
        exposed_axes.append(ax)
    top = max((np.nanmax(m.per_step.bubble_ns, initial=0) for m, _ in paths.values() if m.measurable), default=0)
    exposed_axes[0].set_ylim(0, max(top / 1e3, 1e-3) * 1.1)  # the axes share it
    for ax in (hidden_ax, *exposed_axes):
        ax.axvspan(steps[0] - 0.5, steps[1] + 0.5, color=GANTT_BAND, alpha=0.6, lw=0, zorder=0)
    exposed_axes[-1].set_xlabel("step")
    colours, labels = _exposed_colors(), dict(EXPOSED)
    handles: list[Any] = [Patch(color=colours[c]) for c, _ in EXPOSED if c in drawn]
    names = [labels[c] for c, _ in EXPOSED if c in drawn]
    for color, name in zip(PATH_COLORS * n, paths, strict=False):
        handles.append(Line2D([], [], color=color, lw=1.2, marker="."))
        names.append(f"{name}: bubble (line)")
    exposed = catalog.path_metric("per_step.exposed_ns")
    title = f"bars: {exposed.label} by what the host was doing; they sum to the bubble"
    _legend_row(fig.add_subplot(grid[2 + n]), handles, names, 3, title=title)
    return 3 + n


def svg_of(fig: Any) -> str:
    """The figure as SVG text."""
    buf = io.StringIO()
    with_fonts(fig.savefig, buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def with_fonts(save: Any, *args: Any, **kwargs: Any) -> None:
    """Call a savefig under the figure's fonts and SVG settings."""
    import matplotlib

    with matplotlib.rc_context(FONTS):
        save(*args, **kwargs)


def write_figure(fig: Any, out: str | os.PathLike[str], fmt: str) -> None:
    """Write `fig` to `out` (atomically; '-': standard output) as `fmt`, png or svg."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}")
    if fmt == "svg":
        data = svg_of(fig).encode()
    else:
        buf = io.BytesIO()
        with_fonts(fig.savefig, buf, format="png", dpi=PNG_DPI)
        data = buf.getvalue()
    with atomic_open(out, "wb") as f:
        f.write(data)


def plot_run(
    paths: Mapping[str, tuple[PathMetrics, Sequence[Span] | SpanTable]],
    out: str | os.PathLike[str],
    gantt_steps: tuple[int, int] | None = None,
    title: str = "",
    fmt: str = "png",
) -> None:
    """Draw the run's figure (`draw_run`) and write it to `out` as `fmt` (png or svg), atomically."""
    write_figure(draw_run(paths, gantt_steps, title), out, fmt)
