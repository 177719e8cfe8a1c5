"""Where the GPU waited between the kernels of C_k: each idle gap of their union, by step kind, stage and API call.

The model. The records are exactly those the kernels-only busy time (`PathBuilder.kernel_busy_ns`) is the
union of: C_k's kernels and whole-graph records launched in the compute stages (not the engine's timing
kernels, not copies), in launch order (one stream: the union grows at its end or starts anew).

- Each gap of the union, the GPU idle between the union's end and the start of a later record, is
  attributed to the record that ends it: its step k, the stage it was launched in
  (preprocess_and_execute_model or postprocess) and the runtime API call that launched it (`api_name`:
  cudaGraphLaunch for a graph's records, cudaLaunchKernel, cuLaunchKernelEx, cudaMemsetAsync, ...).
- Each piece of busy time the union gains is attributed to the step of the record that adds it.
- A step is a graph step when a CUDA graph launch call ran inside its compute stages, else an eager step.

So per step: busy_ns and idle_ns (the gaps ending at its records), and per (step, stage, call) the gaps'
count and idle ns; `IdleLedger` keeps them while the attribution runs, `summarize` adds them up over the
measured steps. For the steps of a kind, kernel_busy = busy / (busy + idle); a call's share = its idle ns /
the path's GPU window. Under --cuda-graph-trace=graph a graph replay is one record, so a graph step's idle
is only what lies outside its graph records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GRAPH, EAGER = "graph", "eager"
TOP_WAITED_FOR = 8  # entries of `waited_for` in the JSON


@dataclass
class IdleLedger:
    """Per step, the union's busy and idle ns; per (step, stage, call), the gaps [count, idle ns]."""

    busy_ns: dict[int, int] = field(default_factory=dict)
    idle_ns: dict[int, int] = field(default_factory=dict)
    gaps: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)
    graph_steps: set[int] = field(default_factory=set)  # steps with a graph launch call in a compute stage

    def busy(self, step: int, ns: int) -> None:
        """The union gained `ns` of busy time from a record of `step`."""
        if ns > 0:
            self.busy_ns[step] = self.busy_ns.get(step, 0) + ns

    def gap(self, step: int, stage: str, call: str, ns: int) -> None:
        """A gap of `ns` ended at a record of `step`, launched in `stage` by the API call `call`."""
        self.idle_ns[step] = self.idle_ns.get(step, 0) + ns
        entry = self.gaps.setdefault((step, stage, call), [0, 0])
        entry[0] += 1
        entry[1] += ns


def _kind_totals(ledger: IdleLedger, steps: list[int]) -> dict[str, Any]:
    busy = sum(ledger.busy_ns.get(k, 0) for k in steps)
    idle = sum(ledger.idle_ns.get(k, 0) for k in steps)
    # kernel_busy = busy / (busy + idle) over the kind's steps: its share of the GPU time those steps' records span.
    return {
        "steps": len(steps),
        "busy_ns": busy,
        "idle_ns": idle,
        "kernel_busy": busy / (busy + idle) if busy + idle else None,
    }


def summarize(ledger: IdleLedger, steps: Iterable[int], window_ns: int) -> dict[str, Any]:
    """The ledger over the measured `steps`: per step kind its totals, and the top (kind, stage, call) waits."""
    measured = sorted({int(k) for k in steps})
    kind = {k: GRAPH if k in ledger.graph_steps else EAGER for k in measured}
    waited: dict[tuple[str, str, str], list[int]] = {}
    for (k, stage, call), (count, ns) in ledger.gaps.items():
        if k in kind:
            entry = waited.setdefault((kind[k], stage, call), [0, 0])
            entry[0] += count
            entry[1] += ns
    top = sorted(waited.items(), key=lambda item: (-item[1][1], item[0]))[:TOP_WAITED_FOR]
    return {
        "graph_steps": _kind_totals(ledger, [k for k in measured if kind[k] == GRAPH]),
        "eager_steps": _kind_totals(ledger, [k for k in measured if kind[k] == EAGER]),
        "waited_for": [
            {
                "step_kind": step_kind,
                "stage": stage,
                "call": call,
                "count": count,
                "idle_ns": ns,
                "mean_ns": ns / count,
                # share = idle ns / the path's GPU window (metrics.gpu_window_ns)
                "share": ns / window_ns if window_ns else None,
            }
            for (step_kind, stage, call), (count, ns) in top
        ],
    }
