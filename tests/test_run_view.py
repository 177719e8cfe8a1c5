"""One derivation: compare, report and analyze show the same numbers over the same steps.

A real CPU comparison of the default trace, shown by `compare` and again by `report` from its run.json;
the window and an interrupted path change the steps every number covers, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.errors import InputError
from fdoverlap_cli.measure import catalog
from fdoverlap_cli.measure.derive import PathTiming, derive
from fdoverlap_cli.measure.quantities import GPU_FIELDS
from fdoverlap_cli.measure.records import SpanTable
from fdoverlap_cli.results import RunResult
from tests.conftest import REPO, run_cli
from tests.loop_model import spans

pytestmark = pytest.mark.usefixtures("ops")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """`compare` of the default trace, whole and over steps 10..20: (run.json, what compare printed)."""
    folder = tmp_path_factory.mktemp("view")
    out = {}
    for name, extra in (("whole", []), ("window", ["--window", "10:20"])):
        run_json = folder / f"{name}.results.json"
        proc = run_cli("compare", "--device", "cpu", "--warmup", "2", *extra, "-o", str(run_json))
        assert proc.returncode == 0, proc.stderr
        table, wrote = proc.stdout.rsplit("\n", 2)[0] + "\n", proc.stdout.splitlines()[-1]
        assert wrote == f"wrote {run_json}"  # after the table, which report prints alone
        out[name] = (run_json, table)
    return out


@pytest.mark.parametrize("name", ["whole", "window"])
def test_report_prints_what_compare_printed(runs, name):
    run_json, printed = runs[name]
    proc = run_cli("report", str(run_json))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed


def test_report_with_the_same_window_prints_what_compare_printed(runs):
    run_json, printed = runs["window"]
    proc = run_cli("report", str(run_json), "--window", "10:20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed
    assert "steps 10–20 (window 10:20)" in printed


def _summary(*args: str) -> dict:
    proc = run_cli("report", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_number_of_a_window_covers_its_steps(runs):
    run_json, _ = runs["window"]
    s = _summary(str(run_json))
    assert s["window"] == s["steps"] == [10, 20]
    run = RunResult.load(run_json)
    for name, p in s["paths"].items():
        m = p["metrics"]
        assert (m["first_step"], m["last_step"]) == (10, 20)
        cols = run.paths[name].columns
        inside = (cols["step"] >= 10) & (cols["step"] <= 20)
        assert m["tokens"] == int(cols["emitted"][inside].sum()) == int(cols["generated"][inside].sum())
        assert m["batch_tokens"] == int(cols["tokens"][inside].sum())
        assert m["tokens_per_s"] == pytest.approx(m["tokens"] / (m["wall_ns"] * 1e-9))  # the same measured span
    sync, overlap = (s["paths"][p]["metrics"]["wall_ns"] for p in ("sync", "overlap"))
    change = s["comparison"]["changes"]["wall_ns"]
    assert (change["sync"], change["overlap"], change["delta"]) == (sync, overlap, overlap - sync)
    assert isinstance(change["within_noise"], bool)
    # On the CPU the speedup is not measurable: null, and said so.
    assert s["comparison"]["speedup"] is None and s["comparison"]["measurable"] is False


def test_the_json_keys_are_the_catalogs(runs):
    run_json, _ = runs["whole"]
    metrics = _summary(str(run_json))["paths"]["sync"]["metrics"]
    for m in catalog.rows(catalog.RUN, sources=("path",)):
        assert m.value(metrics) is not None or m.gpu, m.key  # every row of the table is a key of the JSON


def _interrupted(run_json: Path, out: Path, last: int) -> Path:
    """The run with its overlap path cut after step `last`, as an interruption leaves it."""
    run = RunResult.load(run_json)
    p = run.paths["overlap"]
    rows = p.columns["step"] <= last
    waits = p.columns["wait_step"] <= last
    p.columns = {k: v[waits] if k.startswith("wait_") else v[rows] for k, v in p.columns.items()}
    p.complete = False
    run.save(out)
    return out


def test_an_interrupted_path_is_compared_over_the_steps_both_ran(runs, tmp_path):
    run_json = _interrupted(runs["whole"][0], tmp_path / "cut.results.json", last=60)
    s = _summary(str(run_json))
    assert s["steps"] == [0, 60]
    for p in ("sync", "overlap"):
        m = s["paths"][p]["metrics"]
        assert (m["first_step"], m["last_step"]) == (0, 60) and m["wall_ns"] > 0
    assert s["comparison"]["changes"]["wall_ns"]["delta"] is not None
    assert "overlap was interrupted after step 60" in s["notes"]
    assert any("measured over 0–60" in n for n in s["notes"])
    printed = run_cli("report", str(run_json), env={"COLUMNS": "200"}).stdout
    assert "overlap (incomplete)" in printed and "steps 0–60" in printed and "interrupted after step 60" in printed
    # Another window inside the steps both ran works too.
    assert _summary(str(run_json), "--window", "10:20")["steps"] == [10, 20]


def test_a_window_outside_the_measured_steps_is_one_line(runs):
    proc = run_cli("report", str(runs["whole"][0]), "--window", "500:600")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fdoverlap: error: --window 500:600: no spans in steps 500..600"


# --------------------------------------------------------------------------- derive on the loop model


def _timing(path: str, steps: int, complete: bool = True) -> PathTiming:
    return PathTiming(SpanTable.from_spans(spans(path, steps, start_ns=10**9)), complete)


def test_derive_measures_both_paths_over_the_steps_both_ran():
    d = derive({"sync": _timing("sync", 20), "overlap": _timing("overlap", 12, complete=False)})
    assert d.steps == (0, 11)
    assert {m.last_step for m in d.paths.values()} == {11}
    assert d.comparison is not None and d.comparison.speedup > 1
    assert d.notes == (
        "overlap was interrupted after step 11",
        "the paths ran different steps (sync 0–19, overlap 0–11): all are measured over 0–11",
    )


def test_derive_keeps_a_path_without_steps_and_compares_nothing():
    empty = PathTiming(SpanTable.from_spans([]), complete=False)
    d = derive({"sync": _timing("sync", 5), "overlap": empty}, window=(1, 3))
    assert d.steps == (1, 3) and d.paths["sync"].steps == 3
    assert d.paths["overlap"].steps == 0 and d.comparison is None
    assert "overlap was interrupted before the measured steps" in d.notes


def test_derive_refuses_a_window_with_no_step():
    with pytest.raises(InputError, match=r"no spans in steps 30\.\.40"):
        derive({"sync": _timing("sync", 5)}, window=(30, 40))


def test_the_docs_definition_table_is_the_catalog():
    text = (REPO / "docs" / "architecture.md").read_text()
    assert catalog.markdown() in text


def test_every_catalog_key_names_a_metric():
    from fdoverlap_cli.measure.metrics import path_metrics

    doc = path_metrics(spans("overlap", 6)).to_dict()
    for m in catalog.PATH_METRICS:
        value = m.value(doc)
        facts = ("tokens", "tokens_per_s", "batch_tokens", "harness_ns_per_decode_step", "tpot_ns.mean")
        assert value is not None or m.key in (*facts, "graph_steps", "eager_steps"), m.key
        if m.per_step:  # a series, or (exposed host time) one series per category
            series = value.values() if isinstance(value, dict) else [value]
            assert all(isinstance(v, list) and len(v) == 6 for v in series), m.key
        elif value is not None:
            assert np.isscalar(value), m.key


# --------------------------------------------------------------------------- what a CPU run cannot measure


def test_a_cpu_run_writes_no_gpu_number_as_measured(runs):
    run_json, printed = runs["whole"]
    s = _summary(str(run_json))
    for p in s["paths"].values():
        m = p["metrics"]
        assert m["measurable"] is False
        for key in GPU_FIELDS:
            assert m[key] is None, key
        for metric in catalog.PATH_METRICS:
            if metric.gpu and not metric.per_step:
                assert metric.value(m) is None, metric.key
        assert m["wall_ns"] > 0 and m["step_time_ns"]["mean"] > 0  # the host's own timing stays
    c = s["comparison"]
    assert c["measurable"] is False and (c["speedup"], c["overlap_efficiency"], c["limit_ns"]) == (None, None, None)
    table, _, after = printed.partition("not measurable on the CPU")
    assert after and all(label not in table for label in ("bubble", "GPU busy", "hidden", "speedup", "exposed"))
    derived = json.loads(run_json.read_text())["derived"]  # the file's own summary, for its readers
    assert derived["paths"]["sync"]["bubble_ns"] is None and derived["comparison"]["speedup"] is None


def test_tpot_per_request_is_timed_by_the_saves_of_its_first_and_last_token(runs):
    """TPOT = (t_last - t_first) / (n - 1), t the end of the save of the step that produced the token: recomputed
    here from the run's step table and the steps the run recorded for each request's tokens."""
    run_json, _ = runs["whole"]
    run = RunResult.load(run_json)
    s = _summary(str(run_json))
    for name, p in run.paths.items():
        save_end = dict(zip(p.columns["step"].tolist(), p.columns["save_end"].tolist(), strict=True))
        tpot = []
        for t in p.tokens.values():
            first, last, n = t["steps"]
            assert n == t["count"]  # every request got the tokens its steps produced
            if n > 1:
                tpot.append((save_end[last] - save_end[first]) / (n - 1))
        m = s["paths"][name]["metrics"]
        assert m["tpot_ns"]["count"] == len(tpot) > 10
        assert m["tpot_ns"]["mean"] == pytest.approx(np.mean(tpot))
        assert m["itl_ns"]["mean"] != pytest.approx(m["tpot_ns"]["mean"])  # two quantities, named apart
