"""CUDA API calls and kernels as Nsight Systems names them: which block the host, which launch a graph, which
are the engine's timing.

Shared by every reading of an export that has to tell a host wait or an instrumentation kernel apart.
"""

from __future__ import annotations

import re

from fdoverlap_cli.measure.schema import TIMING_KERNELS

# Host-blocking API calls (names without nsys's _vNNNN / _ptsz suffixes).
SYNCHRONIZE_CALLS = frozenset(
    {
        "cudaEventSynchronize",
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaThreadSynchronize",
        "cuEventSynchronize",
        "cuStreamSynchronize",
        "cuCtxSynchronize",
    }
)
_SUFFIX = re.compile(r"(?:_ptsz|_ptds)?(?:_v\d+)?$")


def api_name(name: str) -> str:
    """An API function's name as nsys records it, without the version and per-thread-stream suffixes."""
    return _SUFFIX.sub("", name)


def is_host_wait_call(name: str) -> bool:
    """Whether the API call `name` blocks the host until the GPU catches up (synchronize, synchronous copy)."""
    base = api_name(name)
    return base in SYNCHRONIZE_CALLS or (base.startswith(("cudaMemcpy", "cuMemcpy")) and "Async" not in base)


GRAPH_LAUNCH_CALLS = frozenset({"cudaGraphLaunch", "cuGraphLaunch"})


def is_graph_launch_call(name: str) -> bool:
    """Whether the API call `name` launches a CUDA graph (its GPU work comes as kernels or one graph record)."""
    return api_name(name) in GRAPH_LAUNCH_CALLS


def is_timing_kernel(name: str) -> bool:
    """The engine's timing kernels (record_timestamp's, clock_samples' ping-pong): not model compute."""
    return name in TIMING_KERNELS
