"""Test-only stand-ins for the decode CUDA graphs (engine/graphs.py), to tell its parts apart.

- `CpuGraphDevice`: the CPU device with stand-in graphs. A "graph" re-runs the captured work on replay and
  copies its result into the output the capture returned, as a real replay writes into the buffers its
  capture allocated; so the padding, the static buffers and their copies run on the CPU exactly as on a GPU.
- `PaddedEager`: the forward of a decode-only batch padded to its capture size, as a graph replay runs it,
  but launched eagerly: the same kernels at the same shapes, without a graph. A graph that replays anything
  other than the eager work of its batch differs from it; a kernel whose rows depend on the batch's row
  count makes both differ from the unpadded eager forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fdoverlap_cli import ops as op_library
from fdoverlap_cli.engine.device import Device
from fdoverlap_cli.engine.graphs import ModelForward, SizeGraph, capture_sizes
from fdoverlap_cli.platform import probe
from fdoverlap_cli.trace import Insert, Request, Step, Trace, TraceConfig


class _RerunGraph:
    def __init__(self, work: Callable[[], Any], out: Any) -> None:
        self.work, self.out, self.replays = work, out, 0

    def replay(self) -> None:
        self.out.copy_(self.work(), True)
        self.replays += 1

    def reset(self) -> None:
        pass


class CpuGraphDevice(Device):
    """The CPU device, with graphs that re-run their work into the captured output (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("cpu", probe(), op_library.load())
        self.captured: list[_RerunGraph] = []

    @property
    def has_graphs(self) -> bool:
        return True

    def capture_graph(self, work: Callable[[], Any]) -> tuple[Any, Any]:
        out = work()
        graph = _RerunGraph(work, out)
        self.captured.append(graph)
        return graph, out


class PaddedEager(ModelForward):
    """Decode-only batches padded to FastDeploy's capture sizes and launched eagerly (no graph)."""

    def __init__(self, device: Any, model: Any, share: Any) -> None:
        super().__init__(device, model, share, mode="off")
        self.sizes = capture_sizes(share.max_num_seqs)

    def capture_all(self) -> None:
        if not self.graphs:
            self.graphs = {rows: self._eager_size(rows) for rows in self.sizes}

    def _eager_size(self, rows: int) -> SizeGraph:
        dev, s = self.device, self.share
        ids, batch_id, cu_q = (
            dev.empty([rows], "int64"),
            dev.empty([rows], "int32"),
            dev.empty([s.max_num_seqs + 1], "int32"),
        )

        def launch() -> Any:
            return self.model.forward(ids, batch_id, cu_q, s.seq_lens_decoder, s.kv_cache)

        return SizeGraph(rows, ids, batch_id, cu_q, launch)


def padded_eager(engine: Any) -> Any:
    """`engine` with its forward replaced by `PaddedEager` (before its first replay)."""
    engine.forward = PaddedEager(engine.device, engine.model, engine.share)
    return engine


def decoding_trace(running: int = 5, slots: int = 16, output_len: int = 40) -> Trace:
    """`running` requests prefilled together at step 0, then decoding side by side in `slots` slots."""
    requests = tuple(Request(f"r{i}", 8, output_len) for i in range(running))
    steps = (Step(insert=tuple(Insert(f"r{i}", i, 0, 8) for i in range(running))),) + (Step(),) * (output_len - 1)
    config = TraceConfig(
        max_num_seqs=slots, max_model_len=64, block_size=16, num_kv_blocks=64, max_num_batched_tokens=64
    )
    return Trace(config=config, requests=requests, steps=steps, meta={"source": "test:decoding"})


def one_forward_three_ways(engine: Any) -> dict[str, Any]:
    """The decode forward of the engine's current batch (all slots decoding) as its graph replays it, as the
    eager forward of the same padded batch, and as the eager forward of the exact batch: hidden rows as numpy."""
    n = int(np.asarray(engine.share.seq_lens_this_time.numpy()).sum())
    graph = engine.forward.run(n, True)
    assert graph.graph_rows >= n, "the batch did not replay a graph"
    rows = {"graph": np.array(graph.hidden.numpy())[:n]}
    padded = PaddedEager(engine.device, engine.model, engine.share)
    padded.capture_all()
    rows["padded"] = np.array(padded.run(n, True).hidden.numpy())[:n]
    rows["exact"] = np.array(engine.forward.run(n, False).hidden.numpy())
    return {"rows": n, "size": graph.graph_rows, **rows}


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
