"""run.json: a RunResult is saved and loaded as it is, and its step table is stored compactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.results import PathRecord, RunResult, step_spans


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


def _path(rows: int) -> PathRecord:
    return PathRecord(
        name="overlap",
        complete=False,
        columns=_columns(rows),
        copy_track="gpu:compute",
        tokens={"r0": {"count": 3, "sha256": "ab"}},
    )


def test_the_step_table_round_trips_exactly_through_json():
    path = _path(200)
    loaded = PathRecord.from_dict(json.loads(json.dumps(path.to_dict())))
    assert loaded.columns.keys() == path.columns.keys()
    for name, values in path.columns.items():
        np.testing.assert_array_equal(loaded.columns[name], values, err_msg=name)
    spans, again = step_spans(path.columns, "gpu:compute"), loaded.spans()
    np.testing.assert_array_equal(spans.start_ns, again.start_ns)


def _run(rows: int) -> RunResult:
    trace = {"file": "t.json", "sha256": "0" * 64, "requests": 1, "steps": rows}
    model = {"name": "tiny", "num_layers": 2, "dtype": "float32"}
    return RunResult(["fdoverlap"], {"device": "gpu"}, trace, model, {}, {"overlap": _path(rows)})


def test_times_are_stored_as_short_offsets_and_per_step_metrics_are_left_out():
    run = _run(1000).to_dict()
    doc = run["paths"]["overlap"]
    cols = doc["columns"]
    assert cols["insert_start"][0] is None and cols["save_end"][-1] is None
    assert max(abs(x) for x in cols["gpu_fwd_end"]) < 10_000_000  # an offset from the row's pre_start
    assert "metrics" not in doc  # derived, not recorded
    assert "per_step" not in run["derived"]["paths"]["overlap"]
    per_row = len(json.dumps(doc["columns"])) / 1000
    assert per_row < 260  # bytes of the step table per step


def test_a_file_that_is_not_a_run_is_input_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "fdoverlap-run", "version": 99}))
    with pytest.raises(InputError, match="unknown results version"):
        RunResult.load(str(bad))


def test_a_run_round_trips_and_derives_the_same_numbers(tmp_path):
    run = _run(300)
    run.save(tmp_path / "x.results.json")
    loaded = RunResult.load(tmp_path / "x.results.json")
    assert loaded.view(None).to_dict() == run.view(None).to_dict()
    assert json.loads((tmp_path / "x.results.json").read_text())["derived"] == run.view(None).to_dict()


def test_a_results_file_of_another_version_is_one_line(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "fdoverlap-run", "version": 1, "paths": {}}))
    with pytest.raises(InputError) as e:
        RunResult.load(old)
    assert str(e.value) == f"{old}: version: unknown results version 1 (this fdoverlap reads version 2)"
