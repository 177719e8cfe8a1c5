"""The device facade: the one place that asks about CUDA or touches places, streams and events.

On a CPU-only paddle build every CUDA call is avoided (some of them kill the interpreter);
the CPU "device" runs everything synchronously, so a replay there proves correctness only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from fdoverlap_cli import stop_signals
from fdoverlap_cli.errors import FdoError

INSTALL_HINT = "install it with: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)"


def _load_libstdcxx_first() -> None:
    # paddlepaddle-gpu 2.6.2 exports thousands of weak std:: template instantiations; loaded before the C++
    # runtime they win symbol lookup for the op library too, and formatting a number into an ostream there
    # (every failed op check) then crashed the process on an H100 host. With libstdc++ in the global scope
    # first, as LD_PRELOAD would put it, the checks raise as they should.
    if sys.platform.startswith("linux") and "paddle" not in sys.modules:
        with contextlib.suppress(OSError):
            ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6", mode=os.RTLD_GLOBAL)


def require_paddle() -> ModuleType:
    """Import paddle, or fail with one line that says how to install it."""
    # paddle warns at import that ccache is missing; fdoverlap caches its own builds and never uses it.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    _load_libstdcxx_first()
    with stop_signals.held():  # paddle's import installs a C handler for SIGTERM: keep the signal Python's
        try:
            import paddle
        except ImportError as e:
            raise FdoError(f"paddle is not installed ({e}); {INSTALL_HINT}") from None
    return paddle


@dataclass(frozen=True)
class DeviceInfo:
    """What this machine offers; gathered without touching CUDA on a CPU-only build."""

    paddle_version: str
    paddle_commit: str
    compiled_with_cuda: bool
    paddle_cuda_version: str | None  # the CUDA paddle was built with
    gpu_count: int
    gpu_name: str | None
    capability: tuple[int, int] | None
    driver_version: str | None
    total_memory_bytes: int | None

    @property
    def arch(self) -> str | None:
        """`sm_90` style name of the GPU's architecture."""
        return f"sm_{self.capability[0]}{self.capability[1]}" if self.capability else None

    @property
    def has_gpu(self) -> bool:
        return self.compiled_with_cuda and self.gpu_count > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch"] = self.arch
        return d


def _driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()
    return line[0].strip() if out.returncode == 0 and line else None


@cache
def probe() -> DeviceInfo:
    """Describe paddle and the GPU (if any). Cached: the answer does not change within a process."""
    paddle = require_paddle()
    cuda = bool(paddle.is_compiled_with_cuda())
    count = name = cap = mem = None
    if cuda:
        count = int(paddle.device.cuda.device_count())
        if count:
            props = paddle.device.cuda.get_device_properties(0)
            name = props.name
            cap = (int(props.major), int(props.minor))
            mem = int(props.total_memory)
    return DeviceInfo(
        paddle_version=paddle.__version__,
        paddle_commit=getattr(paddle.version, "commit", "unknown"),
        compiled_with_cuda=cuda,
        paddle_cuda_version=paddle.version.cuda() if cuda else None,
        gpu_count=count or 0,
        gpu_name=name,
        capability=cap,
        driver_version=_driver_version() if cuda else None,
        total_memory_bytes=mem,
    )


class _HostEvent:
    """Stands in for a CUDA event on the CPU device, where all work is already done."""

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


class Device:
    """A place to run on ('cpu' or 'gpu') and everything stream- or event-shaped about it."""

    def __init__(self, kind: str, info: DeviceInfo) -> None:
        self.paddle = require_paddle()
        self.kind = kind
        self.info = info
        self.is_gpu = kind == "gpu"
        self.ops: Any = None  # the op library, attached by the engine once it is loaded
        if self.is_gpu:
            self.paddle.set_device("gpu:0")
            self.place = self.paddle.CUDAPlace(0)
            cuda = self.paddle.device.cuda
            self.compute_stream = cuda.current_stream()
            self._copy_stream: Any = None
        else:
            self.paddle.set_device("cpu")
            self.place = self.paddle.CPUPlace()
            self.compute_stream = None
            self._copy_stream = None

    @classmethod
    def open(cls, kind: str = "auto") -> Device:
        """'auto' takes the GPU when paddle sees one; asking for 'gpu' without one is an error."""
        if kind not in ("auto", "cpu", "gpu"):
            raise FdoError(f"--device: expected auto, cpu or gpu, got '{kind}'")
        info = probe()
        if kind == "gpu" and not info.has_gpu:
            why = "paddle was built without CUDA" if not info.compiled_with_cuda else "no GPU is visible"
            raise FdoError(f"--device gpu: {why}; use --device cpu or install paddlepaddle-gpu")
        chosen = "gpu" if kind == "gpu" or (kind == "auto" and info.has_gpu) else "cpu"
        return cls(chosen, info)

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
