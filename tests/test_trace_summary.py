"""The trace summary's numbers and its rendering."""

from __future__ import annotations

import io
import itertools

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from fdoverlap_cli.render.trace_summary import render_trace_summary, sparkline
from fdoverlap_cli.trace.format import trace_from_dict
from fdoverlap_cli.trace.scheduler import SchedulerOptions
from fdoverlap_cli.trace.summary import Distribution, bin_steps, summarize
from fdoverlap_cli.trace.synth import SynthSpec, synth_trace
from tests.test_trace_validate import BASE


def test_nearest_rank_percentiles() -> None:
    d = Distribution.of([5, 1, 4, 2, 3, 10, 9, 8, 7, 6])
    assert (d.min, d.mean, d.p50, d.p90, d.max) == (1, 5.5, 5, 9, 10)
    assert Distribution.of([7]) == Distribution(7, 7.0, 7, 7, 7)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=300), st.integers(1, 60))
def test_bins_cover_every_step_once(batch: list[int], count: int) -> None:
    bins = bin_steps(batch, count)
    assert len(bins) == min(count, len(batch))
    assert bins[0].first_step == 0 and bins[-1].last_step == len(batch) - 1
    assert all(a.last_step + 1 == b.first_step for a, b in itertools.pairwise(bins))
    assert all(b.min <= b.mean <= b.max for b in bins)


def test_summary_counts_what_the_steps_run() -> None:
    s = summarize(trace_from_dict(BASE))
    assert (s.requests, s.steps, s.prefill_tokens, s.decode_tokens) == (2, 4, 16, 3)
    assert (s.chunks, s.chunked_prefills, s.preemptions) == (3, 1, 0)
    # Batch per step: r0 | r0 + r1 | r0 + r1 | r1.
    assert [b.mean for b in s.batch_bins] == [1, 2, 2, 1]
    assert (s.kv_blocks.peak, s.kv_blocks.step) == (5, 2)  # r0: 8 tokens = 2 blocks, r1: 10 = 3
    assert s.to_dict()["token_budget"] == {"limit": 16, "peak": 9, "step": 1}


def test_rendering_shows_the_key_numbers() -> None:
    trace = synth_trace(SynthSpec(requests=8, scheduler=SchedulerOptions(max_num_seqs=4, num_kv_blocks=12)))
    out = io.StringIO()
    render_trace_summary(summarize(trace), title="t.json", console=Console(file=out, width=200))
    text = out.getvalue()
    assert "t.json" in text and "preemptions" in text and "fdoverlap trace synth --requests 8" in text
    assert sparkline([0, 1, 4, 8], 8) == " ▂▅█"
