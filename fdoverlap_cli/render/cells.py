"""Cells shared by the renderers: a number in its unit, the change from sync to overlap, the steps shown."""

from __future__ import annotations

from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import Comparison, Derived

MISSING = "–"


def value(x: float | None, unit: str, digits: int | None = None) -> str:
    """`x` in `unit` (ms, us, pct, bytes or num; times in ns, fractions as 0..1); a dash when missing.

    A num shows `digits` decimals; by default none for a whole number and three otherwise.
    """
    if x is None:
        return MISSING
    if unit == "ms":
        return f"{x / 1e6:,.3f} ms"
    if unit == "us":
        return f"{x / 1e3:,.1f} µs"
    if unit == "pct":
        return f"{100 * x:.1f}%"
    if unit == "bytes":
        return f"{x / 2**20:,.1f} MiB" if x >= 2**20 else f"{x:,.0f} B"
    if digits is None:
        digits = 0 if float(x).is_integer() else 3
    return f"{x:,.{digits}f}"


def change(sync: float | None, overlap: float | None, unit: str) -> str:
    """Overlap against sync: percentage points for a fraction, else relative; empty when it cannot be said."""
    if sync is None or overlap is None:
        return ""
    if unit == "pct":
        return f"{100 * (overlap - sync):+.1f} pt"
    return f"{100 * (overlap - sync) / sync:+.1f}%" if sync else ""


def steps_line(view: Derived) -> str:
    """The steps every number covers, and the window asked for."""
    covered = "no measured step" if view.steps is None else f"steps {view.steps[0]}–{view.steps[1]}"
    return covered + (f" (window {view.window[0]}:{view.window[1]})" if view.window else "")


def comparison_line(comparison: Comparison) -> str:
    """Speedup and overlap efficiency, labelled as the catalog names them."""
    c = comparison.to_dict()
    speedup, efficiency = catalog.COMPARISON_METRICS
    return (
        f"{speedup.label} {value(speedup.value(c), speedup.unit, 3)}× · {efficiency.label} "
        f"{value(efficiency.value(c), efficiency.unit)} of the limit ({value(c['limit_ns'], 'ms')})"
    )
