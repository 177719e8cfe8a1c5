"""`fdoverlap sweep` on the CPU (tiny preset, grids of two points): the grid's syntax, the results file, resuming,
an interruption, the emulated host work, and the token check at every point."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fdoverlap_cli.cli import main
from fdoverlap_cli.errors import InputError, Interrupted
from fdoverlap_cli.measure.derive import derive
from fdoverlap_cli.results import RunResult
from fdoverlap_cli.session import ReplaySession
from fdoverlap_cli.sweep import grid
from fdoverlap_cli.sweep.record import SweepResult
from tests.conftest import REPO
from tests.test_bad_input import fails

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")

SMALL = ["--device", "cpu", "--warmup", "1", "--waves", "1", "--prompt-len", "4..8", "--output-len", "4..6"]
GRID = ["--batch", "2", "--axis", "copy_stream=compute,separate"]


def _sweep(out: Path, *extra: str) -> int:
    return main(["sweep", *SMALL, *GRID, "-o", str(out), *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ops) -> Path:
    """A real sweep of two points (batch 2 × copy stream on the compute stream or its own)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    out = tmp_path_factory.mktemp("sweep") / "sweep.json"
    try:
        assert _sweep(out, "--png", str(out.with_suffix(".png"))) == 0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    return out


@pytest.fixture
def count_runs(monkeypatch):
    """The number of points whose comparison ran (ReplaySession.run calls)."""
    calls = []
    real = ReplaySession.run

    def counted(self, progress=None):
        calls.append(self.config.trace_file)
        return real(self, progress)

    monkeypatch.setattr(ReplaySession, "run", counted)
    return calls


# --------------------------------------------------------------------------- the grid


def test_every_scalar_option_is_an_axis():
    fields = grid.axis_fields()
    for name in ("copy_stream", "token_count", "cuda_graph", "host_work_us", "host_work_stage", "fused_layers"):
        assert name in fields, name
    assert fields["layers"].optional and fields["layers"].kind is int
    for not_an_axis in ("trace_file", "device", "window", "command", "paths"):
        assert not_an_axis not in fields


def test_axis_values_parse_by_type():
    assert grid.parse_axis("copy-stream=compute,separate").values == ("compute", "separate")
    assert grid.parse_axis("host_work_us=0,500").values == (0, 500)
    assert grid.parse_axis("fused_layers=on,off").values == (True, False)
    assert grid.parse_axis("layers=none,2").values == (None, 2)
    assert grid.parse_axis("--cuda-graph=on", {"--cuda-graph": "cuda_graph"}).name == "cuda_graph"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--axis", "bogus=1,2"], ("--axis bogus", "not an option a sweep can vary", "copy_stream")),
        (["--axis", "copy_stream"], ("--axis", "expected NAME=V1,V2")),
        (["--axis", "copy_stream=compute,,separate"], ("--axis copy_stream", "no empty value")),
        (["--axis", "copy_stream=compute,compute"], ("given twice",)),
        (["--axis", "copy_stream=compute,sideways"], ("--axis copy_stream=sideways", "expected compute or separate")),
        (["--axis", "host_work_us=1,many"], ("--axis host_work_us", "whole number")),
        (["--axis", "host_work_us=-3"], ("--axis host_work_us=-3", ">= 0")),
        (["--axis", "fused_layers=maybe"], ("--axis fused_layers", "on or off")),
        (["--axis", "device=cpu"], ("--axis device", "not an option")),
        (["--axis", "batch=2,4"], ("--axis batch", "--batch")),
        (["--axis", "copy_stream=compute", "--axis", "copy-stream=separate"], ("--axis copy_stream", "given twice")),
    ],
)
def test_a_bad_axis_is_one_line(capsys, tmp_path, args, fragments):
    fails(capsys, ["sweep", "--device", "cpu", "--batch", "2", *args, "-o", tmp_path / "s.json"], *fragments)
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "s.traces").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([], ("--batch", "--trace")),
        (["--batch", "2", "--trace", "traces/default.json"], ("one of them",)),
        (["--batch", "0,2"], ("--batch", "from 1 to 4096")),
        (["--batch", "2,x"], ("--batch", "'x'")),
        (["--batch", "2", "--prompt-len", "9..3"], ("--prompt-len",)),
        (["--batch", "2", "-o", "-"], ("-o", "must be a file")),
        (["--trace", "no-such-trace.json"], ("no-such-trace.json",)),
    ],
)
def test_a_bad_grid_is_one_line(capsys, tmp_path, args, fragments):
    out = ["-o", tmp_path / "s.json"] if "-o" not in args else []
    fails(capsys, ["sweep", "--device", "cpu", *args, *out], *fragments)
    assert not (tmp_path / "s.json").exists()


# --------------------------------------------------------------------------- the results file


def test_every_point_is_a_whole_compare(swept):
    doc = json.loads(swept.read_text())
    assert (doc["format"], doc["version"], doc["complete"]) == ("fdoverlap-sweep", 1, True)
    assert [a["name"] for a in doc["axes"]] == ["batch", "copy_stream"]
    assert [p["key"] for p in doc["points"]] == [
        {"batch": 2, "copy_stream": "compute"},
        {"batch": 2, "copy_stream": "separate"},
    ]
    for p in doc["points"]:
        run = RunResult.from_dict(p["run"])  # a run.json, checked as one
        assert p["status"] == "done" and run.complete and run.identity.identical
        assert run.options["runner"]["copy_stream"] == p["key"]["copy_stream"]
        assert run.trace["config"]["max_num_seqs"] == 2
    assert (swept.parent / "sweep.traces" / "batch-2.json").is_file()
    assert swept.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_the_file_round_trips(swept):
    doc = json.loads(swept.read_text())
    assert SweepResult.from_dict(doc).to_dict() == doc


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["points"][0].update(status="finished"), "points[0].status"),
        (lambda d: d["points"][1].update(run=None), "points[1].run"),
        (lambda d: d["points"][0].update(key={"copy_stream": "compute", "batch": 2}), "points[0].key"),
        (lambda d: d["points"][1].update(id=d["points"][0]["id"]), "points"),
        (lambda d: d["axes"].clear(), "axes"),
        (lambda d: d["points"][0]["run"]["paths"]["sync"].update(complete="yes"), "points[0].run: paths.sync.complete"),
        (lambda d: d.update(version=7), "version"),
    ],
)
def test_a_bad_file_names_where(swept, change, where):
    doc = copy.deepcopy(json.loads(swept.read_text()))
    change(doc)
    with pytest.raises(InputError) as e:
        SweepResult.from_dict(doc, "s.json")
    assert e.value.where.startswith(f"s.json: {where}"), e.value


def test_report_renders_a_sweep(capsys, swept, tmp_path):
    assert main(["report", str(swept), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in shown["rows"]] == ["same", "same"]
    assert all(r["speedup"] is None and r["gpu_busy"]["overlap"] is None for r in shown["rows"])  # the CPU
    assert main(["report", str(swept), "--png", str(tmp_path / "r.png")]) == 0
    assert "not measurable on the CPU" in capsys.readouterr().out
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    fails(capsys, ["report", swept, "--window", "1:2"], "--window", "sweep")


# --------------------------------------------------------------------------- resuming, interrupting


def test_a_rerun_skips_the_points_measured(swept, tmp_path, count_runs):
    out = tmp_path / "sweep.json"
    doc = json.loads(swept.read_text())
    doc["points"][1].update(status="incomplete")
    out.write_text(json.dumps(doc))
    assert _sweep(out) == 0
    assert len(count_runs) == 1  # the incomplete point only
    after = json.loads(out.read_text())
    assert after["complete"] and after["points"][0]["run"] == doc["points"][0]["run"]
    assert _sweep(out) == 0 and len(count_runs) == 1  # all done: nothing runs
    assert _sweep(out, "--fresh") == 0 and len(count_runs) == 3


def test_a_file_of_another_sweep_is_refused(capsys, swept, tmp_path, count_runs):
    out = tmp_path / "sweep.json"
    out.write_text(swept.read_text())
    fails(capsys, ["sweep", *SMALL, *GRID, "--layers", "1", "-o", out], str(out), "other options", "--fresh")
    assert count_runs == [] and out.read_text() == swept.read_text()


def test_an_interrupted_point_is_kept_incomplete_and_resumed(tmp_path, ops, monkeypatch, count_runs):
    """SIGINT in the second point's overlap path (deterministic: at its second step): exit 130, the file whole
    with the first point done and the second incomplete; the same command then runs the second alone."""
    out = tmp_path / "sweep.json"
    real = ReplaySession.run

    def interrupted(self, progress=None):
        def stop(phase, done, total, note=None):
            if len(count_runs) == 2 and phase == "overlap" and done == 2:
                raise Interrupted(signal.SIGINT)

        return real(self, stop)

    monkeypatch.setattr(ReplaySession, "run", interrupted)
    assert _sweep(out) == 130
    doc = SweepResult.load(out)
    assert [p.status for p in doc.points] == ["done", "incomplete"]
    partial = doc.points[1].run
    assert partial.paths["sync"].complete and not partial.paths["overlap"].complete
    monkeypatch.setattr(ReplaySession, "run", real)
    assert _sweep(out) == 0
    assert SweepResult.load(out).complete


@pytest.mark.slow
def test_sigint_keeps_a_valid_file(tmp_path, ops):
    """A real SIGINT once the first point is saved: exit 130 (or 0 had it finished), the file a valid sweep."""
    from tests.test_interrupts import Watched

    out = tmp_path / "sweep.json"
    run = Watched(["sweep", *SMALL, "--batch", "2,3", "-o", str(out)], out)
    run.start()
    run.wait_for("results", 0.0)
    while run.proc.poll() is None and '"status": "done"' not in out.read_text():
        time.sleep(0.01)
    code, stderr = run.interrupt(signal.SIGINT)
    assert "Traceback" not in stderr, stderr
    doc = SweepResult.load(out)
    assert code == (0 if doc.complete else 130), stderr
    assert doc.points[0].status == "done"
    assert run.debris() == []


# --------------------------------------------------------------------------- host work, token checks


def test_host_work_is_spent_in_its_stage(tmp_path, ops):
    """--host-work-us in a stage shows in that stage's host time and in its exposed host time, and run.json
    records it. On the CPU every copy is synchronous, so the CPU's spans show the attribution: work before the
    launch (preprocess) is a bubble on both paths; save's is on the sync path, and on the overlap path it runs
    between step k's forward and its postprocess (on a GPU: behind the forward)."""
    out = tmp_path / "sweep.json"
    args = ["sweep", *SMALL, "--batch", "2", "--host-work-us", "5000", "--axis", "host_work_stage=preprocess,save"]
    assert main([*args, "-o", str(out)]) == 0
    points = SweepResult.load(out).points
    for point, stage, other in zip(points, ("preprocess", "save"), ("save", "preprocess"), strict=True):
        runner = point.run.options["runner"]
        assert (runner["host_work_us"], runner["host_work_stage"]) == (5000, stage)
        view = derive({name: p.timing(gpu_timed=True) for name, p in point.run.paths.items()})
        for name, m in view.paths.items():
            assert m.host_stages[stage].mean_ns >= 5e6, (stage, name)
            assert m.host_stages[other].mean_ns < 5e6, (stage, name)
            if stage == "preprocess" or name == "sync":
                assert m.exposed[stage].total_ns >= 5e6 * (m.steps - 1), (stage, name)  # one a bubble


def test_replay_takes_host_work(capsys, tmp_path, ops):
    out = tmp_path / "run.json"
    assert main(["replay", "--device", "cpu", "--warmup", "1", "--host-work-us", "3000", "-o", str(out)]) == 0
    run = RunResult.load(out)
    assert run.options["runner"]["host_work_us"] == 3000
    assert run.view(None).paths["overlap"].host_stages["preprocess"].mean_ns >= 3e6
    fails(capsys, ["replay", "--device", "cpu", "--host-work-stage", "lunch"], "--host-work-stage", "lunch")


def test_tokens_are_checked_at_every_point(capsys, tmp_path, ops, monkeypatch):
    """A point whose paths' tokens differ: every point still runs, then exit 1 naming the point."""
    import fdoverlap_cli.session as session
    from fdoverlap_cli.engine.token_check import IdentityCheck

    real, calls = session.compare_streams, []

    def second_differs(*args, **kwargs):
        calls.append(1)
        check = real(*args, **kwargs)
        if len(calls) != 2:
            return check
        first = {"request": "r0", "token_index": 1, "step": 3, "sync": 5, "overlap": 6}
        return IdentityCheck(False, check.requests, check.tokens, first)

    monkeypatch.setattr(session, "compare_streams", second_differs)
    out = tmp_path / "sweep.json"
    assert _sweep(out) == 1
    err = capsys.readouterr().err
    assert "copy_stream=separate: tokens differ first at request r0" in err
    doc = SweepResult.load(out)
    assert doc.complete and [r.tokens for r in doc.view().rows] == ["same", "differ"]


def test_the_help_names_the_grid():
    proc = subprocess.run(
        [sys.executable, "-m", "fdoverlap_cli", "sweep", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0
    for option in ("--batch", "--axis", "--trace", "--host-work-us", "--host-work-stage", "--png", "--svg"):
        assert option in proc.stdout


@pytest.mark.gpu
def test_a_gpu_sweep_measures_every_point(tmp_path, ops):
    """On a GPU every point has its speedup, GPU busy and exposed host time, and identical tokens."""
    out = tmp_path / "sweep.json"
    args = ["sweep", "--device", "gpu", "--preset", "8b", "--layers", "2", "--waves", "1", "--output-len", "8..12"]
    assert main([*args, "--batch", "4,8", "--axis", "copy_stream=compute,separate", "-o", str(out)]) == 0
    view = SweepResult.load(out).view()
    assert len(view.rows) == 4 and view.measurable
    for r in view.rows:
        assert r.tokens == "same" and r.speedup is not None
        assert all(r.gpu_busy[p] is not None and r.exposed_ns[p] is not None for p in ("sync", "overlap"))
