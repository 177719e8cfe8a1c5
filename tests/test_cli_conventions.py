"""What users of command-line tools expect: choices shown in the help, help that reads at 80 columns,
one line for every file written, `-` for standard output, JSON wherever --json is asked for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from fdoverlap_cli.cli import app, main
from fdoverlap_cli.engine.device import DEVICES
from fdoverlap_cli.engine.graphs import GRAPH_MODES
from fdoverlap_cli.engine.model import PRESETS
from fdoverlap_cli.engine.runner import RunnerOptions
from fdoverlap_cli.errors import OptionError
from fdoverlap_cli.measure.schema import PATHS
from tests.conftest import run_cli
from tests.test_bad_input import fails
from tests.test_trace_validate import BASE

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


def _options(*command: str) -> dict[str, Any]:
    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    options = [p for p in cmd.params if p.param_type_name == "option"]
    assert options
    return {opt: p for p in options for opt in (*p.opts, *p.secondary_opts)}


# --------------------------------------------------------------------------- help


CHOICES = {
    "--device": DEVICES,
    "--preset": (*PRESETS, "auto"),
    "--cuda-graph": GRAPH_MODES,
    "--token-count": ("predict", "sync"),
    "--copy-stream": ("compute", "separate"),
    "--host-work-stage": ("insert", "preprocess", "postprocess", "save"),
}


@pytest.mark.parametrize("command", ["replay", "compare"])
def test_choices_show_as_choices_and_are_what_the_engine_takes(command):
    proc = run_cli(command, "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    shown = {**CHOICES, **({"--path": PATHS} if command == "replay" else {})}
    for option, values in shown.items():
        assert f"{option} [{'|'.join(values)}]" in proc.stdout, option
    for value in CHOICES["--token-count"]:
        RunnerOptions(token_count=value)
    for value in CHOICES["--copy-stream"]:
        RunnerOptions(copy_stream=value)
    for make in (lambda: RunnerOptions(token_count="bogus"), lambda: RunnerOptions(copy_stream="bogus")):
        with pytest.raises(OptionError):
            make()


@pytest.mark.parametrize(
    "command",
    [["replay"], ["compare"], ["sweep"], ["report"], ["analyze"], ["profile"], ["trace", "synth"], ["ops", "build"]],
)
def test_help_reads_at_80_columns(command):
    """Every option name is there whole, and no line but the example runs past 80 columns."""
    proc = run_cli(*command, "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        assert len(line) <= 80 or line.strip().startswith("Example: "), line
    words = set(re.findall(r"--?[\w-]+", proc.stdout))
    for option in _options(*command):
        assert option in words, option


def test_compare_says_that_no_path_flag_runs_both():
    text = " ".join(run_cli("compare", "--help", env={"COLUMNS": "80"}).stdout.split())
    assert "Without --sync or --overlap both paths run" in text


# --------------------------------------------------------------------------- files written


def test_every_file_written_is_one_line(cpu_run, tmp_path):
    png, timeline = tmp_path / "run.png", tmp_path / "timeline.json"
    proc = run_cli("report", str(cpu_run), "--png", str(png), "--timeline", str(timeline))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [f"wrote {png}", f"wrote {timeline}"]
    proc = run_cli("report", str(cpu_run), "--timeline", str(timeline), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["paths"]  # stdout: the JSON alone
    assert proc.stderr == f"wrote {timeline}\n"


def test_replay_says_what_it_wrote(tmp_path, ops):
    out, timeline = tmp_path / "run.json", tmp_path / "timeline.json"
    proc = run_cli("replay", "--device", "cpu", "--warmup", "0", "-o", str(out), "--timeline", str(timeline))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [f"wrote {out}", f"wrote {timeline}"]
    assert json.loads(out.read_text())["format"] == "fdoverlap-run"


def test_results_to_standard_output(tmp_path, ops):
    """`-o -` writes run.json to stdout, as the trace commands write a trace; the table goes to stderr."""
    proc = run_cli("replay", "--device", "cpu", "--warmup", "0", "--path", "sync", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["paths"]["sync"]["complete"] is True
    assert "output tokens" in proc.stderr and proc.stderr.splitlines()[-1] == "wrote standard output"
    assert not (Path.cwd() / "-").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-o", "-", "--json"], "--json: cannot print the summary to standard output when -o goes there"),
        (["-o", "-", "--timeline", "-"], "--timeline -: -o already writes to standard output"),
    ],
)
def test_standard_output_has_one_user(capsys, tmp_path, args, fragment):
    fails(capsys, ["replay", "--device", "cpu", *args], fragment)


def test_analyze_timeline_to_standard_output(capsys):
    from tests.test_bad_input import NSYS_EXPORT

    code = main(["analyze", str(NSYS_EXPORT), "--timeline", "-"])
    out, err = capsys.readouterr()
    assert code == 2 and "--timeline: no fdoverlap paths to draw" in err  # an export of another program
    assert out == ""


# --------------------------------------------------------------------------- JSON and options that name themselves


def test_validate_json_of_an_invalid_trace(tmp_path):
    doc = json.loads(json.dumps(BASE))
    doc["steps"][1]["insert"][0]["slot"] = 0
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    proc = run_cli("trace", "validate", str(path), "--json")
    assert proc.returncode == 2
    verdict = json.loads(proc.stdout)
    assert verdict["ok"] is False and verdict["where"] == f"{path}: steps[1].insert[0].slot"
    assert "slot 0 still holds request r0" in verdict["reason"]
    assert proc.stderr == f"fdoverlap: error: {verdict['error']}\n"


def test_gantt_names_itself(capsys, cpu_run, tmp_path):
    png = tmp_path / "run.png"
    fails(capsys, ["report", cpu_run, "--png", png, "--gantt", "5:3"], "--gantt: expected FIRST:LAST", "'5:3'")
    assert not png.exists()


def test_a_gantt_outside_the_run_is_an_error(capsys, cpu_run, tmp_path):
    png = tmp_path / "run.png"
    fails(capsys, ["report", cpu_run, "--png", png, "--gantt", "500:600"], "--gantt: steps 500–600 hold none")
    assert not png.exists()


def test_a_gantt_without_a_figure_is_an_error(capsys, cpu_run):
    fails(capsys, ["report", cpu_run, "--gantt", "1:2"], "--gantt: it picks the steps of the figure's Gantt charts")


def _failed_check(cpu_run: Path, tmp_path: Path, change) -> Path:
    doc = json.loads(cpu_run.read_text())
    change(doc)
    path = tmp_path / "failed.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("what", ["identity", "output check"])
def test_report_of_a_failed_token_check_exits_1(capsys, cpu_run, tmp_path, what):
    def tokens_differ(doc):
        difference = {"request": "r3", "token_index": 7, "step": 12, "sync": 5, "overlap": 9}
        doc["identity"].update(identical=False, first_difference=difference)

    def stream_wrong(doc):
        doc["paths"]["overlap"]["reader"]["output_check"] = {"ok": False, "problems": ["r3: 9 tokens, expected 10"]}

    path = _failed_check(cpu_run, tmp_path, tokens_differ if what == "identity" else stream_wrong)
    assert main(["report", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "tokens differ" in out or "output check failed" in out
    assert err.startswith("fdoverlap: error: ") and len(err.splitlines()) == 1
