"""The device facade: the one place that touches places, streams, events, CUDA graphs and the timing ops.

`Device.open()` returns a whole device: the place, the compute stream and the op library loaded for
it. On a CPU-only paddle build every CUDA call is avoided (some of them kill the interpreter); the
CPU "device" runs everything synchronously, so a replay there proves correctness only.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from fdoverlap_cli import ops as op_library
from fdoverlap_cli.errors import OptionError
from fdoverlap_cli.platform import DeviceInfo, probe, require_paddle

DEVICES = ("auto", "cpu", "gpu")
T = TypeVar("T")


class _HostEvent:
    """Stands in for a CUDA event on the CPU device, where all work is already done."""

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


class DeviceGraph:
    """A captured CUDA graph: `replay()` launches its work on the stream it was captured on."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph

    def replay(self) -> None:
        self._graph.replay()

    def reset(self) -> None:
        """Free the graph and its memory pool."""
        self._graph.reset()


class Device:
    """A place to run on ('cpu' or 'gpu') and everything stream- or event-shaped about it."""

    def __init__(self, kind: str, info: DeviceInfo, ops: ModuleType, gpu_index: int = 0) -> None:
        self.paddle = require_paddle()
        self.kind = kind
        self.info = info
        self.is_gpu = kind == "gpu"
        self.ops = ops  # the op library built for this machine
        if self.is_gpu:
            self.paddle.set_device(f"gpu:{gpu_index}")
            self.place = self.paddle.CUDAPlace(gpu_index)
            cuda = self.paddle.device.cuda
            self.compute_stream = cuda.current_stream()
            self._copy_stream: Any = None
        else:
            self.paddle.set_device("cpu")
            self.place = self.paddle.CPUPlace()
            self.compute_stream = None
            self._copy_stream = None

    @classmethod
    def open(cls, kind: str = "auto", gpu_index: int = 0) -> Device:
        """'auto' takes the GPU when paddle sees one; asking for 'gpu' without one is an error. `gpu_index`:
        which GPU (a tensor-parallel rank's own).

        Loads (building if needed) the op library: the device's timing and copies run through it.
        """
        if kind not in DEVICES:
            raise OptionError("device", f"expected auto, cpu or gpu, got '{kind}'")
        info = probe()
        if kind == "gpu" and not info.has_gpu:
            why = "paddle was built without CUDA" if not info.compiled_with_cuda else "no GPU is visible"
            raise OptionError("device", f"gpu asked for, but {why}; use cpu or install paddlepaddle-gpu")
        chosen = "gpu" if kind == "gpu" or (kind == "auto" and info.has_gpu) else "cpu"
        return cls(chosen, info, op_library.load(), gpu_index)

    @property
    def name(self) -> str:
        return self.info.gpu_name if self.is_gpu and self.info.gpu_name else "CPU"

    # ------------------------------------------------------------------ memory

    def empty(self, shape: list[int] | tuple[int, ...], dtype: str) -> Any:
        """Uninitialised device memory (write before reading)."""
        return self.paddle.empty(list(shape), dtype=dtype)

    def to_device(self, array: np.ndarray) -> Any:
        """A device tensor holding a copy of `array`."""
        return self.paddle.to_tensor(np.ascontiguousarray(array), place=self.place)

    def host_buffer(self, shape: list[int] | tuple[int, ...], dtype: str) -> Any:
        """A zeroed host buffer that device copies land in: pinned on a GPU, plain memory on the CPU.

        Read it with `.numpy()` or the project's ops only: a paddle op on a pinned tensor
        turns it into a GPU tensor.
        """
        cpu = self.paddle.to_tensor(np.zeros(shape, dtype=dtype), place=self.paddle.CPUPlace())
        return cpu.pin_memory() if self.is_gpu else cpu

    def host_tensor(self, array: np.ndarray) -> Any:
        """A CPU tensor holding a copy of `array` (for ops that read on the host)."""
        return self.paddle.to_tensor(np.ascontiguousarray(array), place=self.paddle.CPUPlace())

    def write_host(self, tensor: Any, array: np.ndarray) -> None:
        """Copy `array` into the memory of the CPU tensor `tensor` (same shape and dtype).

        For per-step host data: every tensor made from a numpy array leaks a little in paddle 3.3, and
        `set_value` on a GPU build of paddle 2.6 moves the tensor to the GPU; a memory copy does neither.
        """
        src = np.ascontiguousarray(array, dtype=tensor.numpy().dtype)
        if list(src.shape) != list(tensor.shape):
            raise ValueError(f"write_host: shape {list(src.shape)} into a tensor of shape {list(tensor.shape)}")
        ctypes.memmove(tensor.data_ptr(), src.ctypes.data, src.nbytes)

    # ------------------------------------------------------------------ streams and events

    @property
    def copy_stream(self) -> Any:
        """A second stream for device-to-host copies (created on first use; None on the CPU)."""
        if self.is_gpu and self._copy_stream is None:
            self._copy_stream = self.paddle.device.cuda.Stream()
        return self._copy_stream

    @contextlib.contextmanager
    def on_stream(self, stream: Any) -> Iterator[None]:
        """Run the paddle ops and project ops of the block on `stream` (no-op on the CPU)."""
        if not self.is_gpu or stream is None or stream is self.compute_stream:
            yield
            return
        with self.paddle.device.cuda.stream_guard(stream):
            yield

    def new_event(self) -> Any:
        if not self.is_gpu:
            return _HostEvent()
        return self.paddle.device.cuda.Event()

    def record_event(self, event: Any, stream: Any = None) -> None:
        """Record `event` at the current end of `stream` (the compute stream by default)."""
        if self.is_gpu:
            event.record(stream or self.compute_stream)

    def wait_event(self, stream: Any, event: Any) -> None:
        """Make `stream` wait, on the device, for `event`."""
        if self.is_gpu and stream is not None:
            stream.wait_event(event)

    def copy(self, dst: Any, src: Any) -> None:
        """Copy device `src` into device `dst` (same shape and dtype), in stream order on a GPU."""
        dst.copy_(src, not self.is_gpu)

    def copy_to_host(self, dst: Any, src: Any, stream: Any = None) -> None:
        """Copy device `src` into host buffer `dst` (same shape/dtype): async on a GPU, on `stream`."""
        if not self.is_gpu:
            dst.copy_(src, True)
            return
        with self.on_stream(stream):
            dst.copy_(src, False)

    def synchronize(self) -> None:
        if self.is_gpu:
            self.paddle.device.cuda.synchronize()

    def stream_handle(self, stream: Any = None) -> int:
        """The raw cudaStream_t of `stream` as an int for the project's ops (0: the op's own stream)."""
        if not self.is_gpu or stream is None:
            return 0
        return int(stream.cuda_stream)

    # ------------------------------------------------------------------ CUDA graphs

    @property
    def has_graphs(self) -> bool:
        """CUDA graphs exist on a GPU only."""
        return self.is_gpu

    def capture_graph(self, work: Callable[[], T]) -> tuple[DeviceGraph, T]:
        """Capture the device work `work()` launches on the compute stream as one CUDA graph; returns it and
        what `work` returned (tensors allocated during the capture live in the graph's memory pool).

        `paddle.device.cuda.graphs.CUDAGraph(place, mode)` is the same call on paddle 2.6 and 3.x: 2.6 has
        no memory-pool argument (every capture gets a pool of its own), 3.x's `pool_id` defaults to the same.
        Any failure leaves the stream out of capture mode and is raised as it came.
        """
        if not self.is_gpu:
            raise RuntimeError("CUDA graphs need a GPU")
        graphs = importlib.import_module("paddle.device.cuda.graphs")
        graph = graphs.CUDAGraph(self.place, mode="thread_local")
        graph.capture_begin()
        try:
            out = work()
        except BaseException:
            with contextlib.suppress(Exception):  # the capture is invalid; ending it is only to leave capture mode
                graph.capture_end()
            raise
        graph.capture_end()
        return DeviceGraph(graph), out

    def memory_bytes(self) -> tuple[int, int]:
        """(allocated, reserved) bytes of paddle's device allocator; (0, 0) on the CPU."""
        if not self.is_gpu:
            return 0, 0
        cuda = self.paddle.device.cuda
        return int(cuda.memory_allocated()), int(cuda.memory_reserved())

    # ------------------------------------------------------------------ timing

    def timestamp(self, buf: Any, index: int, stream: Any = None) -> None:
        """Write a device-side time into buf[index] when `stream` reaches this point.

        GPU: the global timer (ns); CPU: CLOCK_MONOTONIC now.
        """
        self.ops.record_timestamp(buf, index, self.stream_handle(stream))

    def clock_samples(self, samples: int) -> np.ndarray:
        """[samples, 3] int64 rows (host_before, device_time, host_after) for clock alignment."""
        probe_tensor = self.empty([1], "int64")
        return np.asarray(self.ops.clock_samples(probe_tensor, samples).numpy(), dtype=np.int64)

    def profiler_start(self) -> None:
        """cudaProfilerStart, for `nsys profile -c cudaProfilerApi` (no-op on the CPU)."""
        if self.is_gpu:
            self.paddle.base.core.nvprof_start()

    def profiler_stop(self) -> None:
        if self.is_gpu:
            self.paddle.base.core.nvprof_stop()
