"""The model's forward of one step, as FastDeploy launches it: a CUDA graph per batch size for decode-only batches.

FastDeploy captures the decode forward (embedding through the final norm) once per capture size during
warm-up and replays, for a decode-only batch of n tokens, the graph of the smallest captured size >= n;
logits, sampling and the step ops stay outside the graph, and a batch with a prefill runs eagerly. So
does `ModelForward.run`, the one call stage 1 of every runner makes once it knows the token count.

- Capture sizes: FastDeploy's default rule (`GraphOptimizationConfig._set_cudagraph_sizes`): 1, 2, 4,
  then every 8 up to 128, every 16 up to 256, every 32 up to 1024, and the largest size itself, all capped at
  min(512, max_num_seqs).
- Padding: `get_padding_offset` packs the batch into the size's rows; the rows past the real tokens are
  padding (id 2, batch id -1), which every kernel skips (no KV cache write, a zero attention row) and
  rebuild_padding never reads.
- Static buffers: each size's graph reads the packed ids, batch ids and cu_seqlens_q from buffers of its
  own, filled by device-to-device copies right before the replay (in stream order), and writes the hidden
  states into the buffer its capture allocated; seq_lens_decoder, the KV cache and the weights are the
  runner's persistent buffers, at the same addresses every step.
- Capture: for each size, largest first, one eager forward of an all-padding batch (kernels loaded and
  cuBLAS's choices for the shape made outside the capture), then the captured one. An all-padding batch
  writes nothing, so capturing leaves the KV cache as it was.
- Eager warm-up (`warm_eager`): one all-padding forward of every token count the trace runs eagerly. cuBLAS
  makes its choice for a GEMM shape, and loads its kernels, on the shape's first call: measured on an H200,
  0.4-1.1 ms of host time for an 8B-class prefill GEMM in isolation and about 4 ms inside a replay, during which
  the GPU waits. A serving engine that has run for a while has seen its token counts; a replay of a few hundred
  steps sees most of them once, so without it every prefill step would pay that cost. The counts come from a dry
  run of the bookkeeping, plus every decode count up to the slots (a runner that launches a decode batch with
  a cached upper bound runs counts the plan does not).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from fdoverlap_cli.errors import ExitCode, FdoError, OptionError, first_line

GRAPH_MODES = ("auto", "on", "off")
MAX_CAPTURE_SIZE = 512  # FastDeploy's cap on decode capture sizes
PAD_TOKEN_ID, PAD_BATCH_ID = 2, -1  # get_padding_offset's padding rows


def capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """FastDeploy's default decode capture sizes for `max_num_seqs` slots, ascending."""
    top = min(MAX_CAPTURE_SIZE, max_num_seqs)
    candidates = (1, 2, 4, *range(8, 129, 8), *range(144, 257, 16), *range(288, 1025, 32), top)
    return tuple(sorted({s for s in candidates if 1 <= s <= top}))


def padded_size(sizes: tuple[int, ...], tokens: int) -> int | None:
    """The smallest captured size that holds `tokens` rows (None: larger than every size)."""
    i = bisect.bisect_left(sizes, tokens)
    return sizes[i] if i < len(sizes) else None


def graphs_enabled(mode: str, has_graphs: bool) -> bool:
    """auto: graphs where the device has them; on: required; off: never."""
    if mode not in GRAPH_MODES:
        raise OptionError("cuda_graph", f"expected auto, on or off, got '{mode}'")
    if mode == "on" and not has_graphs:
        raise OptionError("cuda_graph", "on needs a GPU: this run is on the CPU, which has no CUDA graphs")
    return mode != "off" and has_graphs


@dataclass(frozen=True)
class GraphCapture:
    """What capturing the decode graphs took: the sizes, the host's time, the allocator's bytes around it."""

    sizes: tuple[int, ...]
    capture_ns: int  # every size's eager warm-up forward and capture
    allocated_before: int  # paddle's allocator, before the first capture's buffers and after the last capture
    allocated_after: int
    reserved_before: int
    reserved_after: int

    @property
    def memory_bytes(self) -> int:
        """Device memory the graphs took: the allocator's reserved bytes after the captures minus before."""
        return self.reserved_after - self.reserved_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes), "memory_bytes": self.memory_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphCapture:
        return cls(**{**{k: v for k, v in d.items() if k != "memory_bytes"}, "sizes": tuple(d["sizes"])})


@dataclass(frozen=True)
class EagerWarmup:
    """The eager warm-up: the token counts it ran (ascending) and the host's time for them."""

    token_counts: tuple[int, ...]
    warmup_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"token_counts": list(self.token_counts), "warmup_ns": self.warmup_ns}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EagerWarmup:
        return cls(tuple(d["token_counts"]), d["warmup_ns"])


@dataclass(frozen=True)
class Forward:
    """What the forward of one step handed back to stage 1."""

    hidden: Any  # [rows, H] after the final norm; None when the batch has no tokens
    cu_seqlens_q: Any
    graph_rows: int  # the captured size it replayed; 0: launched eagerly; -1: no forward (no tokens)
    model_ns: int  # host time of the model's launch (the copies and the replay, or the eager forward)


@dataclass
class SizeGraph:
    """One capture size: its static inputs, and `launch()` running the forward on them (-> hidden states)."""

    rows: int
    ids: Any
    batch_id_per_token: Any
    cu_seqlens_q: Any
    launch: Callable[[], Any]


class ModelForward:
    """Packs a step's batch and runs the model's forward: a captured graph for a decode-only batch, else eagerly."""

    def __init__(self, device: Any, model: Any, share: Any, mode: str = "auto") -> None:
        self.device = device
        self.model = model
        self.share = share
        self.ops = device.ops
        self.enabled = graphs_enabled(mode, device.has_graphs)
        self.sizes = capture_sizes(share.max_num_seqs) if self.enabled else ()
        self.graphs: dict[int, SizeGraph] = {}
        self.capture: GraphCapture | None = None
        self.warmup: EagerWarmup | None = None

    def graph_size(self, token_num: int, decode_only: bool) -> int | None:
        """The capture size a batch of `token_num` tokens replays once the graphs are captured (None: eagerly)."""
        return padded_size(self.sizes, token_num) if decode_only else None

    def runs_eagerly(self, token_num: int, decode_only: bool) -> bool:
        """Whether `run` launches a batch of `token_num` tokens eagerly once the graphs are captured."""
        return self.graph_size(token_num, decode_only) is None

    def eager_counts(self, launches: Iterable[tuple[int, bool]]) -> tuple[int, ...]:
        """The distinct token counts of `launches` ((token_num, decode_only) per step) that run eagerly, ascending."""
        return tuple(sorted({n for n, decode_only in launches if n > 0 and self.runs_eagerly(n, decode_only)}))

    def warm_eager(self, counts: Iterable[int]) -> EagerWarmup:
        """One all-padding eager forward of each token count (see the module docstring); it writes no KV cache."""
        dev, s = self.device, self.share
        counts = tuple(counts)
        dev.synchronize()
        t0 = time.monotonic_ns()
        for rows in counts:
            self.model.forward(*self._padding_batch(rows), s.seq_lens_decoder, s.kv_cache)
        dev.synchronize()
        self.warmup = EagerWarmup(counts, time.monotonic_ns() - t0)
        return self.warmup

    def capture_all(self) -> GraphCapture | None:
        """Capture every size once (FastDeploy's order: largest first); None when graphs are off."""
        if not self.enabled or self.capture is not None:
            return self.capture
        dev = self.device
        dev.synchronize()
        allocated, reserved = dev.memory_bytes()
        t0 = time.monotonic_ns()
        for rows in reversed(self.sizes):
            self.graphs[rows] = self.capture_size(rows)
        dev.synchronize()
        after = dev.memory_bytes()
        self.capture = GraphCapture(self.sizes, time.monotonic_ns() - t0, allocated, after[0], reserved, after[1])
        return self.capture

    def _padding_batch(self, rows: int) -> tuple[Any, Any, Any]:
        """(ids, batch_id_per_token, cu_seqlens_q) of a packed batch of `rows` padding rows: no slot runs."""
        dev, ops = self.device, self.ops
        ids, batch_id = dev.empty([rows], "int64"), dev.empty([rows], "int32")
        cu_q = dev.empty([self.share.max_num_seqs + 1], "int32")
        ops.fill_(ids, PAD_TOKEN_ID)
        ops.fill_(batch_id, PAD_BATCH_ID)
        ops.fill_(cu_q, 0)
        return ids, batch_id, cu_q

    def capture_size(self, rows: int) -> SizeGraph:
        """The static buffers of `rows` and the graph of the forward over them."""
        dev, s = self.device, self.share
        ids, batch_id, cu_q = self._padding_batch(rows)

        def forward() -> Any:
            return self.model.forward(ids, batch_id, cu_q, s.seq_lens_decoder, s.kv_cache)

        try:
            forward()
            dev.synchronize()
            graph, hidden = dev.capture_graph(forward)
        except (OSError, RuntimeError, ValueError) as e:
            raise FdoError(
                f"capturing the decode forward as a CUDA graph at batch size {rows} failed: {first_line(e)}; "
                "a replay without CUDA graphs runs every forward eagerly",
                exit_code=ExitCode.INTERNAL,
            ) from e

        def replay() -> Any:
            graph.replay()
            return hidden

        return SizeGraph(rows, ids, batch_id, cu_q, replay)

    def run(self, token_num: int, decode_only: bool) -> Forward:
        """get_padding_offset and the forward of a batch of `token_num` tokens (see the module docstring)."""
        if not token_num:  # nothing to pack or run (zero-row op outputs would also make paddle log a warning)
            return Forward(None, None, -1, 0)
        s, ops, dev = self.share, self.ops, self.device
        size = self.graph_size(token_num, decode_only) if self.graphs else None
        rows = token_num if size is None else size
        ids, batch_id, cu_q, _cu_k = ops.get_padding_offset(s.input_ids, s.seq_lens_this_time, rows)
        t0 = time.monotonic_ns()
        if size is None:
            hidden = self.model.forward(ids, batch_id, cu_q, s.seq_lens_decoder, s.kv_cache)
        else:
            g = self.graphs[size]
            dev.copy(g.ids, ids)
            dev.copy(g.batch_id_per_token, batch_id)
            dev.copy(g.cu_seqlens_q, cu_q)
            hidden = g.launch()
        return Forward(hidden, cu_q, size or 0, time.monotonic_ns() - t0)
