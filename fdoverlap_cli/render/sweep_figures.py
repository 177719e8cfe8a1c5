"""One figure of a sweep: speedup, GPU busy and exposed host time per step against batch size, one line per
option (the values of every axis but the first); the overlap path solid, the sync path dashed.

The x axis is the batch size (the trace's slots); on a trace axis whose traces share a batch size, the traces
by name. On the CPU the three quantities are not measurable: each panel says so, as the run's figure does.
Drawn once (`draw_sweep`) and written as PNG or SVG, or inline in the HTML report, by render/figures.py (its fonts:
the SVG's text drawn as paths); matplotlib is imported only when drawn, off-screen (Agg).
"""

from __future__ import annotations

import os
from typing import Any

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.render import figures
from fdoverlap_cli.render.cells import NOT_MEASURABLE_ON_CPU
from fdoverlap_cli.sweep.record import SweepRow, SweepView

SERIES_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457")
_STYLE = {"overlap": "-", "sync": "--"}


def _x(view: SweepView) -> tuple[dict[str, float], list[float], list[str], bool]:
    """Each point's x (by label), the ticks and their labels, and whether x is the batch size."""
    batches = {r.label: r.batch for r in view.rows}
    by_batch = all(b is not None for b in batches.values())
    for rows in view.series().values():
        by_batch = by_batch and len({r.batch for r in rows}) == len(rows)
    if by_batch:
        ticks = sorted({float(b) for b in batches.values()})  # type: ignore[arg-type]
        return {k: float(b) for k, b in batches.items()}, ticks, [f"{t:g}" for t in ticks], True  # type: ignore[arg-type]
    names = list(dict.fromkeys(str(next(iter(r.key.values()))) for r in view.rows))
    x = {r.label: float(names.index(str(next(iter(r.key.values()))))) for r in view.rows}
    return x, [float(i) for i in range(len(names))], names, False


def _panel(ax: Any, view: SweepView, title: str, unit_label: str, get: Any, paths: tuple[str, ...]) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(unit_label, fontsize=10)
    ax.grid(alpha=0.3)
    if not view.measurable:
        ax.set_yticks([])
        ax.text(0.5, 0.5, NOT_MEASURABLE_ON_CPU, transform=ax.transAxes, ha="center", va="center", color="#616161")
        return
    x, _, _, _ = _x(view)
    for color, (name, rows) in zip(SERIES_COLORS * 4, view.series().items(), strict=False):
        for path in paths:
            pts = sorted((x[r.label], get(r, path)) for r in rows if get(r, path) is not None)
            if not pts:
                continue
            label = name if len(paths) == 1 else f"{name} · {path}"
            ax.plot(*zip(*pts, strict=True), _STYLE.get(path, "-"), color=color, marker="o", ms=4, lw=1.6, label=label)
    if ax.lines:
        ax.legend(fontsize=9, framealpha=0.9)


def draw_sweep(view: SweepView) -> Any:
    """The sweep's figure (a matplotlib Figure, not yet written)."""
    import matplotlib

    with matplotlib.rc_context(figures.FONTS):
        return _draw(view)


def _draw(view: SweepView) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    speedup = catalog.COMPARISON_METRICS[0]
    busy = catalog.path_metric("gpu_busy")
    exposed = catalog.path_metric("per_step.exposed_ns")
    fig = Figure(figsize=(10, 11), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)

    def speed(r: SweepRow, _path: str) -> float | None:
        return r.speedup

    def gpu_busy(r: SweepRow, path: str) -> float | None:
        v = r.gpu_busy.get(path)
        return None if v is None else 100 * v

    def exposed_us(r: SweepRow, path: str) -> float | None:
        v = r.exposed_ns.get(path)
        return None if v is None else v / 1e3

    _panel(axes[0], view, f"{speedup.label}: {speedup.definition}", "×", speed, ("overlap",))
    if view.measurable:
        axes[0].axhline(1.0, color="#9e9e9e", lw=0.8, zorder=0)
    _panel(axes[1], view, f"{busy.label} (solid: overlap path, dashed: sync path)", "%", gpu_busy, ("overlap", "sync"))
    _panel(
        axes[2],
        view,
        f"{exposed.label} per step, mean (the bubble; solid: overlap, dashed: sync)",
        "µs",
        exposed_us,
        ("overlap", "sync"),
    )
    _, ticks, labels, by_batch = _x(view)
    if by_batch and len(ticks) > 1 and ticks[0] > 0:
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
    axes[-1].set_xticks(ticks, labels)
    axes[-1].set_xlabel("batch size (slots)" if by_batch else "trace")
    fig.suptitle(view.title, fontsize=12)
    return fig


def plot_sweep(view: SweepView, out: str | os.PathLike[str], fmt: str = "png") -> None:
    """Write the sweep's figure to `out` (atomically; '-': standard output) as `fmt`: png or svg."""
    figures.write_figure(draw_sweep(view), out, fmt)
