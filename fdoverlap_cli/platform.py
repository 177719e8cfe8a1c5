"""The machine below everything else: importing paddle the one safe way, and what paddle and the GPU offer.

`require_paddle()` is how the product imports paddle (the C++ runtime goes first, SIGTERM
stays Python's); `probe()` describes the build and the GPU without touching CUDA on a CPU-only build
(some CUDA calls kill the interpreter there). `ops.py` and `engine/device.py` both stand on it.
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
from dataclasses import asdict, dataclass
from functools import cache
from types import ModuleType
from typing import Any

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
