"""The synthetic workload generator: length specs, arrivals, defaults, determinism."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fdoverlap_cli.errors import FdoError, InputError
from fdoverlap_cli.trace import validate
from fdoverlap_cli.trace.format import dumps
from fdoverlap_cli.trace.scheduler import SchedulerOptions
from fdoverlap_cli.trace.synth import LengthDist, SynthSpec, draw_requests, parse_lengths, synth_trace


def test_same_spec_same_bytes_and_another_seed_another_trace() -> None:
    spec = SynthSpec(requests=20, arrival_rate=0.3, prompt_len=parse_lengths("normal:40,10,8..80", "x"))
    assert dumps(synth_trace(spec)) == dumps(synth_trace(spec))
    other = SynthSpec(requests=20, arrival_rate=0.3, prompt_len=spec.prompt_len, seed=1)
    assert dumps(synth_trace(other)) != dumps(synth_trace(spec))


def test_defaults_are_a_small_decode_heavy_trace() -> None:
    trace = synth_trace(SynthSpec())
    validate(trace)
    assert len(trace.requests) == 24 and trace.config.max_num_seqs == 16
    assert all(16 <= r.prompt_len <= 64 and 32 <= r.output_len <= 96 for r in trace.requests)
    assert all(r.arrival_step == 0 for r in trace.requests)
    assert 100 <= len(trace.steps) <= 200
    # max_model_len: the longest request rounded up to a block; KV room for every slot at it.
    longest = max(r.prompt_len + r.output_len for r in trace.requests)
    assert trace.config.max_model_len == -(-longest // 16) * 16
    assert trace.config.num_kv_blocks == 16 * trace.config.max_model_len // 16
    assert trace.meta["scheduler"]["preemptions"] == 0


def test_meta_records_the_command_and_parameters() -> None:
    options = SchedulerOptions(max_model_len=128, num_kv_blocks=40)
    meta = synth_trace(SynthSpec(requests=5, output_len=parse_lengths("7", "x"), scheduler=options)).meta
    assert meta["command"] == (
        "fdoverlap trace synth --requests 5 --prompt-len 16..64 --output-len 7 --arrival-rate 0 --seed 0 "
        "--max-num-seqs 16 --max-model-len 128 --block-size 16 --num-kv-blocks 40 --max-num-batched-tokens 2048"
    )
    assert meta["parameters"]["output_len"] == "7" and meta["parameters"]["num_kv_blocks"] == 40
    assert meta["generator"] == "fdoverlap trace synth"


def test_poisson_arrivals_spread_over_steps() -> None:
    requests = draw_requests(SynthSpec(requests=400, arrival_rate=0.5, seed=7))
    arrivals = [r.arrival_step for r in requests]
    assert arrivals == sorted(arrivals)
    # 400 arrivals at 0.5 per step span about 800 steps (the seed fixes the draw).
    assert 700 <= arrivals[-1] <= 900


@given(st.sampled_from(["5..9", "normal:30,20,10..40", "lognormal:50,80,2..300", "12"]), st.integers(0, 2**32))
def test_draws_stay_in_their_range(text: str, seed: int) -> None:
    dist = parse_lengths(text, "--prompt-len")
    rng = random.Random(seed)
    assert all(dist.lo <= dist.sample(rng) <= dist.hi for _ in range(50))


def test_lognormal_has_the_requested_mean() -> None:
    dist = LengthDist("lognormal", 1, 100_000, mean=200.0, std=100.0)
    rng = random.Random(0)
    values = [dist.sample(rng) for _ in range(20_000)]
    assert statistics.fmean(values) == pytest.approx(200, rel=0.03)
    assert statistics.pstdev(values) == pytest.approx(100, rel=0.08)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "expected N, LO..HI, normal:MEAN,STD,LO..HI or lognormal:MEAN,STD,LO..HI, got 'abc'"),
        ("normal:40,5", "expected N, LO..HI"),
        ("9..3", "LO <= HI"),
        ("0", "at least 1"),
        ("lognormal:0,5,1..9", "lognormal needs a mean above 0"),
    ],
)
def test_bad_length_specs_name_the_option(text: str, reason: str) -> None:
    with pytest.raises(InputError) as e:
        parse_lengths(text, "--output-len")
    assert e.value.where == "--output-len" and reason in e.value.reason


def test_a_max_model_len_too_small_is_an_error() -> None:
    with pytest.raises(FdoError, match="exceed max_model_len 40"):
        synth_trace(SynthSpec(scheduler=SchedulerOptions(max_model_len=40)))
