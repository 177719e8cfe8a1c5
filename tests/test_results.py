"""run.json: a RunResult is saved and loaded as it is, and its step table is stored compactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.results import PathResult, RunResult, step_spans


def _columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_795_570_000_000_000_000 + np.cumsum(rng.integers(5_000_000, 9_000_000, rows))  # monotonic ns, 19 digits
    cols = {"step": np.arange(rows), "tokens": rng.integers(1, 64, rows), "generated": rng.integers(0, 16, rows)}
    offsets = {
        "iter_start": -60_000, "insert_start": -50_000, "insert_end": -40_000, "pre_start": 0, "pre_end": 900_000,
        "gpu_pre_start": 20_000, "gpu_fwd_end": 4_000_000, "post_start": 950_000, "post_end": 1_300_000,
        "gpu_post_start": 4_100_000, "gpu_post_end": 4_300_000, "gpu_copy_start": 4_300_500,
        "gpu_copy_end": 4_302_000, "save_start": 1_400_000, "save_end": 4_500_000, "iter_end": 1_350_000,
    }  # fmt: skip
    for name, off in offsets.items():
        cols[name] = t + off + rng.integers(0, 1000, rows)
    cols["insert_start"][::3] = -1  # steps without inserts
    cols["insert_end"][::3] = -1
    cols["save_end"][-1] = -1  # an interrupted last save
    cols["wait_step"] = np.arange(rows)
    cols["wait_start"] = cols["save_start"] + 10
    cols["wait_end"] = cols["save_start"] + 2_000_000
    return {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}


def _path(rows: int) -> PathResult:
    return PathResult(
        path="overlap",
        complete=False,
        columns=_columns(rows),
        copy_track="gpu:compute",
        tokens={"r0": {"count": 3, "sha256": "ab"}},
        reader={"messages": rows},
        stats={"wall_ns": 1},
        metrics={"steps": rows, "hidden": 0.5, "per_step": {"step": list(range(rows))}},
    )


def test_the_step_table_round_trips_exactly_through_json():
    path = _path(200)
    loaded = PathResult.from_dict(json.loads(json.dumps(path.to_dict())))
    assert loaded.columns.keys() == path.columns.keys()
    for name, values in path.columns.items():
        np.testing.assert_array_equal(loaded.columns[name], values, err_msg=name)
    spans, again = step_spans(path.columns, "gpu:compute"), loaded.spans()
    np.testing.assert_array_equal(spans.start_ns, again.start_ns)


def test_times_are_stored_as_short_offsets_and_per_step_metrics_are_left_out():
    doc = _path(1000).to_dict()
    cols = doc["columns"]
    assert cols["insert_start"][0] is None and cols["save_end"][-1] is None
    assert max(abs(x) for x in cols["gpu_fwd_end"]) < 10_000_000  # an offset from the row's pre_start
    assert "per_step" not in doc["metrics"]
    per_row = len(json.dumps(doc["columns"])) / 1000
    assert per_row < 260  # bytes of the step table per step


def test_a_file_that_is_not_a_run_is_input_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "fdoverlap-run", "version": 99}))
    with pytest.raises(InputError, match="unknown results version"):
        RunResult.load(str(bad))
