"""Checks of the token streams the output reader rebuilt: against the trace, and between the two paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fdoverlap_cli.engine.bookkeeping import Bookkeeping
from fdoverlap_cli.trace import Trace

Streams = dict[str, list[int]]  # request id -> its tokens


def token_steps(trace: Trace) -> dict[str, list[int]]:
    """The step at which each token of each request is produced, following the trace's schedule."""
    book = Bookkeeping(trace, vocab_size=2)
    placeholder = np.zeros(trace.config.max_num_seqs, dtype=np.int64)  # resumed prefills count tokens, not values
    steps: dict[str, list[int]] = {r.id: [] for r in trace.requests}
    for k, step in enumerate(trace.steps):
        book.apply_step(step)
        producers = book.launch(k).producers
        book.record_tokens(producers, placeholder)
        for _slot, r in producers:
            steps[trace.requests[r].id].append(k)
    return steps


@dataclass
class StreamCheck:
    """One path's token streams against what the trace implies."""

    ok: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems}


def check_against_trace(trace: Trace, tokens: Streams, markers: list[tuple[int, int, str]]) -> StreamCheck:
    """Every request has exactly output_len tokens ending in the end token; one marker per preemption."""
    problems: list[str] = []
    eos = trace.config.eos_token_id
    for r in trace.requests:
        got = tokens.get(r.id, [])
        if len(got) != r.output_len:
            problems.append(f"request {r.id}: {len(got)} tokens, the trace implies {r.output_len}")
        elif got[-1] != eos:
            problems.append(f"request {r.id}: last token {got[-1]} is not the end token {eos}")
    expected = sum(len(s.preempt) for s in trace.steps)
    if len(markers) != expected:
        problems.append(f"{len(markers)} preemption markers, the trace has {expected} preemptions")
    return StreamCheck(not problems, problems[:20])


@dataclass
class IdentityCheck:
    """Whether two paths emitted the same tokens; where they first differ if not."""

    identical: bool
    requests: int
    tokens: int
    first_difference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "requests": self.requests,
            "tokens": self.tokens,
            "first_difference": self.first_difference,
        }


def compare_streams(trace: Trace, a: Streams, b: Streams, names: tuple[str, str]) -> IdentityCheck:
    """Compare per request; the first difference (in trace order) names the request, token index and step."""
    steps = None
    total = 0
    for r in trace.requests:
        x, y = a.get(r.id, []), b.get(r.id, [])
        total += len(x)
        if x == y:
            continue
        i = next((j for j, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        steps = steps or token_steps(trace)
        produced_at = steps[r.id]
        diff = {
            "request": r.id,
            "token_index": i,
            "step": produced_at[i] if i < len(produced_at) else None,
            names[0]: x[i] if i < len(x) else None,
            names[1]: y[i] if i < len(y) else None,
            f"{names[0]}_count": len(x),
            f"{names[1]}_count": len(y),
        }
        return IdentityCheck(False, len(trace.requests), total, diff)
    return IdentityCheck(True, len(trace.requests), total)
