"""What a trace asks of the replay, in numbers: lengths, batch size over time, token mix, budgets.

Computed from the per-step load the validator derives (`check_steps`), so the summary counts
tokens and KV blocks exactly as the rules do. No rendering here: `report/trace_summary.py`
draws it, `to_dict()` is its JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from fdoverlap_cli.trace.format import Trace, TraceConfig
from fdoverlap_cli.trace.validate import check_steps


@dataclasses.dataclass(frozen=True, slots=True)
class Distribution:
    """min, mean, nearest-rank percentiles (p50, p90) and max of a list of counts."""

    min: int
    mean: float
    p50: int
    p90: int
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Distribution:
        ordered = sorted(values)
        n = len(ordered)

        def rank(q: float) -> int:  # nearest rank: the ceil(q*n)-th smallest value
            return ordered[max(math.ceil(q * n), 1) - 1]

        return cls(ordered[0], sum(ordered) / n, rank(0.5), rank(0.9), ordered[-1])


@dataclasses.dataclass(frozen=True, slots=True)
class BatchBin:
    """Requests running per step (a chunk or a decode token) over steps [first_step, last_step]."""

    first_step: int
    last_step: int
    min: int
    mean: float
    max: int


@dataclasses.dataclass(frozen=True, slots=True)
class Peak:
    limit: int  # the config's budget
    peak: int
    step: int  # first step at the peak


@dataclasses.dataclass(frozen=True, slots=True)
class TraceSummary:
    config: TraceConfig
    requests: int
    steps: int
    prompt_len: Distribution
    output_len: Distribution
    prefill_tokens: int  # Σ chunk lengths (re-prefills after preemption included)
    decode_tokens: int  # Σ decoding requests over steps
    batch: Distribution  # requests running per step
    batch_bins: tuple[BatchBin, ...]
    token_budget: Peak  # tokens per step against max_num_batched_tokens
    kv_blocks: Peak  # blocks held after a step against num_kv_blocks
    chunks: int  # prefill chunks inserted
    chunked_prefills: int  # prefills that took more than one chunk
    preemptions: int
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bin_steps(batch: Sequence[int], count: int) -> tuple[BatchBin, ...]:
    """min(count, n) bins of nearly equal width over n steps: bin i covers [i*n//count, (i+1)*n//count)."""
    n = len(batch)
    count = min(count, n)
    bins = []
    for i in range(count):
        lo, hi = i * n // count, (i + 1) * n // count
        part = batch[lo:hi]
        bins.append(BatchBin(lo, hi - 1, min(part), sum(part) / len(part), max(part)))
    return tuple(bins)


def _peak(values: Sequence[int], limit: int) -> Peak:
    if not values:
        return Peak(limit, 0, 0)
    top = max(values)
    return Peak(limit, top, values.index(top))


def summarize(trace: Trace, *, bins: int = 48) -> TraceSummary:
    """Validate `trace` and summarise it; batch size over time in `bins` bins of steps."""
    load = check_steps(trace)
    n_steps = len(trace.steps)
    batch = [load.decode_tokens[k] + load.chunks[k] for k in range(n_steps)]
    tokens = [load.tokens(k) for k in range(n_steps)]
    config = trace.config
    return TraceSummary(
        config=config,
        requests=len(trace.requests),
        steps=n_steps,
        prompt_len=Distribution.of([r.prompt_len for r in trace.requests]),
        output_len=Distribution.of([r.output_len for r in trace.requests]),
        prefill_tokens=sum(load.prefill_tokens),
        decode_tokens=sum(load.decode_tokens),
        batch=Distribution.of(batch or [0]),
        batch_bins=bin_steps(batch, bins),
        token_budget=_peak(tokens, config.max_num_batched_tokens),
        kv_blocks=_peak(load.kv_blocks, config.num_kv_blocks),
        chunks=sum(load.chunks),
        chunked_prefills=load.chunked_prefills,
        preemptions=load.preemptions,
        meta=trace.meta,
    )
