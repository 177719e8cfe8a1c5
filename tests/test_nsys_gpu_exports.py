"""Exports of the tool's own runs taken on a GPU host (tests/fixtures/nsys/fdoverlap-*.sqlite): analyze must find
both paths with per-step metrics. Passes with no such file present."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdoverlap_cli.measure.nsys_analysis import analyze

EXPORTS = sorted((Path(__file__).parent / "fixtures" / "nsys").glob("fdoverlap-*.sqlite"))


@pytest.mark.parametrize("export", EXPORTS, ids=[p.name for p in EXPORTS])
def test_both_paths_have_per_step_metrics(export):
    a = analyze(export)
    assert a.unavailable is None, a.unavailable
    assert {"sync", "overlap"} <= a.paths.keys()
    for name in ("sync", "overlap"):
        m = a.paths[name].metrics
        assert m.steps > 1, name
        assert m.hidden is not None and 0 <= m.hidden <= 1, name
        assert m.gpu_busy is not None and 0 < m.gpu_busy <= 1, name
        assert a.paths[name].compute_mean_ns > 0, name
        assert a.paths[name].work["dtoh_copies"]["count"] > 0, name
    assert a.comparison is not None and a.comparison.speedup > 0
