"""The tool agrees with Nsight Systems on a real run: its run.json and the nsys export of the same run.

The pair comes from a GPU host (`bash benchmarks/gpu_session.sh pair`: a 6-request synthetic trace,
`compare --preset 8b --layers 2` under `fdoverlap profile --capture all`); both files are committed
under tests/fixtures/nsys/. The test skips, saying so, only while they are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fdoverlap_cli.measure.records import Kind
from fdoverlap_cli.nsys.analysis import NsysAnalysis, analyze
from fdoverlap_cli.nsys.crosscheck import cross_check
from fdoverlap_cli.results import RunResult

FIXTURES = Path(__file__).parent / "fixtures" / "nsys"
EXPORT = FIXTURES / "fdoverlap-pair-8b-2layers.sqlite"
RESULTS = FIXTURES / "fdoverlap-pair-8b-2layers.results.json"

pytestmark = pytest.mark.skipif(
    not (EXPORT.exists() and RESULTS.exists()),
    reason=f"the real pair {EXPORT.name} + {RESULTS.name} is not in tests/fixtures/nsys/ yet "
    "(made on a GPU host by `bash benchmarks/gpu_session.sh pair`)",
)


@pytest.fixture(scope="module")
def pair() -> tuple[NsysAnalysis, RunResult]:
    return analyze(EXPORT), RunResult.load(RESULTS)


def test_the_same_steps_on_both_sides(pair):
    analysis, run = pair
    assert analysis.unavailable is None, analysis.unavailable
    assert set(analysis.paths) == set(run.paths) == {"sync", "overlap"}
    for name, p in analysis.attribution.paths.items():
        nsys_steps = np.unique(p.spans.of_kind(Kind.ITERATION).step)
        tool_steps = np.unique(run.paths[name].spans().of_kind(Kind.ITERATION).step)
        np.testing.assert_array_equal(nsys_steps, tool_steps, err_msg=name)
        assert len(tool_steps) > 10, name


def test_compute_and_hidden_agree(pair):
    analysis, run = pair
    tool = run.view(None).paths
    for name, p in analysis.paths.items():
        ours, theirs = tool[name], p.metrics
        assert theirs.compute_mean_ns == pytest.approx(ours.compute_mean_ns, rel=0.05), name
        assert abs(theirs.hidden_save_work - ours.hidden_save_work) <= 0.02, name


def test_both_sources_find_the_same_launch_bound_steps(pair):
    analysis, run = pair
    tool = run.view(None).paths
    for name, p in analysis.paths.items():
        ours, theirs = tool[name].per_step, p.metrics.per_step
        np.testing.assert_array_equal(ours.step, theirs.step, err_msg=name)
        assert np.array_equal(ours.launch_slack_ns <= 0, theirs.launch_slack_ns <= 0), name
        assert tool[name].launch_bound == p.metrics.launch_bound, name


def test_the_copies_explain_where_copy_and_save_differ(pair):
    """The tool's D_k spans its timestamps around the copies, nsys's the copies alone: the note says both."""
    analysis, run = pair
    cross_check(analysis, run, str(RESULTS))
    notes = [n for n in analysis.notes if "the copies D_k are" in n]
    assert {n.split(":")[0] for n in notes} == {"sync", "overlap"}


def test_the_cross_check_accepts_the_run_and_every_target_holds(pair):
    analysis, run = pair
    check = cross_check(analysis, run, str(RESULTS))
    targeted = [r for r in check.rows if r.target is not None and not r.quantity.startswith("exposed.")]
    assert len(targeted) == 4
    assert all(r.agrees for r in targeted), [r for r in targeted if not r.agrees]


def test_both_sources_split_the_bubble_alike(pair):
    """Per path the exposed host time sums to the bubble on each side, and each stage agrees within 10% or 20 µs."""
    analysis, run = pair
    tool = run.view(None).paths
    for name, p in analysis.paths.items():
        for m in (tool[name], p.metrics):
            assert sum(t.total_ns for t in m.exposed.values()) == m.bubble_total_ns > 0, name
    rows = [r for r in cross_check(analysis, run, str(RESULTS)).rows if r.quantity.startswith("exposed.")]
    assert rows and all(r.agrees for r in rows), [r for r in rows if not r.agrees]
