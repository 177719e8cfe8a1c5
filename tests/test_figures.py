"""The run figure: a real PNG is written atomically for short, long and empty runs."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("matplotlib")

from fdoverlap_cli.measure.metrics import PathMetrics, path_metrics
from fdoverlap_cli.measure.records import SpanTable
from fdoverlap_cli.render.figures import default_gantt_steps, plot_run
from tests.loop_model import StepCosts
from tests.loop_model import spans as simulate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def run(steps: int, **kwargs):
    """Both paths of a simulated run; the overlap path's spans as a table (both forms are accepted)."""
    paths = {}
    for path in ("sync", "overlap"):
        spans = simulate(path, steps, StepCosts(**kwargs), start_ns=10**12)
        paths[path] = (path_metrics(spans), spans if path == "sync" else SpanTable.from_spans(spans))
    return paths


@pytest.mark.parametrize("steps", [12, 600])  # markers per step, and faint lines under a rolling mean
def test_plot_run_writes_a_png(tmp_path, steps):
    out = tmp_path / "figs" / "run.png"
    plot_run(run(steps, copy_stream=True), out)
    data = out.read_bytes()
    width, height = png_size(data)
    assert width > 1000 and height > 800
    assert len(data) > 50_000  # drawn content, not a blank canvas
    assert not list(out.parent.glob(".*.tmp"))


def test_explicit_gantt_steps_and_a_path_without_spans_there(tmp_path):
    paths = run(8)
    paths["empty"] = (PathMetrics(), [])
    out = tmp_path / "run.png"
    plot_run(paths, out, gantt_steps=(2, 3))
    assert png_size(out.read_bytes())[1] > 1000  # one more Gantt row


def test_default_gantt_steps_come_from_the_middle():
    m = path_metrics(simulate("sync", 21))
    assert default_gantt_steps(m) == (9, 12)
    assert default_gantt_steps(path_metrics(simulate("sync", 2))) == (0, 1)
    assert default_gantt_steps(PathMetrics()) is None


def test_no_paths_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="at least one path"):
        plot_run({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
