"""Exports of the tool's own runs taken on a GPU host (tests/fixtures/nsys/fdoverlap-*.sqlite): analyze must find
both paths with per-step metrics. Passes with no such file present."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdoverlap_cli.nsys.analysis import analyze

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
        assert a.paths[name].metrics.compute_mean_ns > 0, name
        assert a.paths[name].work["dtoh_copies"]["count"] > 0, name
    assert a.derived.comparison is not None and a.derived.comparison.speedup > 0


def test_the_small_h100_export_shows_what_the_overlap_does():
    """fdoverlap-small-2layers.sqlite: compare on a 26-step trace, 8B-class shapes with 2 layers, on an H100."""
    a = analyze(Path(__file__).parent / "fixtures" / "nsys" / "fdoverlap-small-2layers.sqlite")
    sync, overlap = a.paths["sync"], a.paths["overlap"]
    for p in (sync, overlap):
        assert p.metrics.steps == 26
        assert p.work["dtoh_copies"]["count"] == 2 * 26  # sampled_token_ids and not_need_stop, every step
        assert p.work["kernel_busy_ns"] < p.metrics.gpu_busy_ns  # launch gaps inside the stages
    assert sync.metrics.hidden == 0.0  # the sync path saves with nothing else queued on the GPU
    assert overlap.metrics.hidden_save_work > 0.5
    assert overlap.metrics.bubble_ns.mean < sync.metrics.bubble_ns.mean / 5
    assert a.derived.comparison.speedup > 1.2
    for p in (sync, overlap):  # the bubble, split by what the host was doing, adds up to it
        assert sum(t.total_ns for t in p.metrics.exposed.values()) == p.metrics.bubble_total_ns > 0
        assert p.metrics.hidden_copies == 0.0 and p.metrics.copies_on_compute_stream
    exposed = {c: t.total_ns for c, t in sync.metrics.exposed.items()}
    assert max(exposed, key=exposed.__getitem__) == "save"  # the sync path's bubble is mostly the save's work
    assert overlap.metrics.exposed_share < 0.01 < sync.metrics.exposed_share
