"""The catalog rows of the steps found without NVTX (`analyze` of another engine's export, `--vs`): part of
measure/catalog.py's METRICS, kept here for its length. `key` is dotted into nsys.markers' RunSummary.to_dict();
`series` names a StepTable column (`per_step.<column>`, `per_step.copies.<class>.<count|bytes|ns>`).
"""

from __future__ import annotations

from typing import Any

from fdoverlap_cli.measure.metric_row import Metric

MARKERS = "markers"  # the per-step table of the steps found without NVTX (analyze, analyze --vs)

# The kinds of copy the steps found without NVTX are split into (direction, host memory): the key of each
# in nsys.markers' StepTable.copies and RunSummary.copies, and its label. Anything else is "other".
COPY_CLASSES = (
    ("dtoh_pinned", "DtoH pinned"),
    ("dtoh_pageable", "DtoH pageable"),
    ("htod_pinned", "HtoD pinned"),
    ("htod_pageable", "HtoD pageable"),
    ("dtod_device", "DtoD"),
    ("other", "other copies"),
)
_PAGEABLE_NOTE = ": CUDA completes a pageable DtoH before its call returns, so the host waits there"


def _marker(key: str, label: str, unit: str, definition: str, **kw: Any) -> Metric:
    return Metric(key, label, unit, definition, source=MARKERS, where=(MARKERS,), **kw)


_P = "per_step."
MARKER_METRICS = (
    _marker("steps", "steps found", "num", "n − 1 steps between the n step boundaries of the marker"),
    _marker(
        "step_time_ns.mean",
        "step time (mean)",
        "us",
        "mean_i b_i − b_{i−1}, b_i the end of step i's last GPU record: the step time on the GPU",
        series=_P + "gpu_period_ns",
    ),
    _marker("step_time_ns.p50", "step time p50", "us", "median of the same", series=_P + "gpu_period_ns"),
    _marker("step_time_ns.p90", "step time p90", "us", "90th percentile of the same", series=_P + "gpu_period_ns"),
    _marker(
        "host_step_time_ns.p50",
        "host period p50",
        "us",
        "median of the time between consecutive markers on the host (the loop's period)",
        series=_P + "host_period_ns",
    ),
    _marker(
        "gpu_kernel_ns.mean",
        "GPU time, kernels only / step",
        "us",
        "mean_i |∪ step i's kernels| (a CUDA graph traced as a whole counts as one record)",
        series=_P + "kernel_busy_ns",
    ),
    _marker(
        "kernel_busy_per_step.p50",
        "GPU busy, kernels only / step p50",
        "pct",
        "median_i |∪ step i's kernels| / (b_i − b_{i−1})",
        series=_P + "kernel_busy",
    ),
    _marker(
        "bubble_ns.mean",
        "bubble (mean)",
        "us",
        "mean_i of the GPU's idle time from b_i to the first kernel of step i+1",
        series=_P + "bubble_ns",
    ),
    _marker("bubble_ns.p90", "bubble p90", "us", "90th percentile of the same", series=_P + "bubble_ns"),
    _marker(
        "kernels_per_step.mean",
        "kernels / step",
        "num",
        "mean_i kernels of step i (the tool's timing kernels left out)",
        series=_P + "kernels",
    ),
    *(
        m
        for cls, label in COPY_CLASSES
        for m in (
            _marker(
                f"copies.{cls}.count_per_step",
                f"copies {label} / step",
                "num",
                f"mean_i {label} copies launched in step i" + (_PAGEABLE_NOTE if cls == "dtoh_pageable" else ""),
                series=f"{_P}copies.{cls}.count",
                shown_when_zero=False,
            ),
            _marker(
                f"copies.{cls}.bytes_per_step",
                f"copies {label}: bytes / step",
                "bytes",
                f"mean_i bytes of step i's {label} copies",
                series=f"{_P}copies.{cls}.bytes",
                shown_when_zero=False,
            ),
            _marker(
                f"copies.{cls}.ns_per_step",
                f"copies {label}: GPU time / step",
                "us",
                f"mean_i GPU time of step i's {label} copies",
                series=f"{_P}copies.{cls}.ns",
                shown_when_zero=False,
            ),
        )
    ),
    _marker(
        "launch_api_ns.mean",
        "host: launch calls / step",
        "us",
        "mean_i host time in step i's launch calls (kernels, async copies and memsets, graph launches)",
        series=_P + "launch_api_ns",
    ),
    _marker(
        "sync_api_ns.mean",
        "host: sync waits / step",
        "us",
        "mean_i host time blocked in step i's synchronisation calls and blocking copies (a pageable DtoH's call)",
        series=_P + "sync_api_ns",
    ),
    _marker(
        "other_api_ns.mean",
        "host: other CUDA calls / step",
        "us",
        "mean_i host time in step i's other CUDA API calls",
        series=_P + "other_api_ns",
    ),
    _marker(
        "graph_launches_per_step.mean",
        "CUDA graph launches / step",
        "num",
        "mean_i cudaGraphLaunch calls of step i",
        series=_P + "graph_launches",
        shown_when_zero=False,
    ),
    _marker(
        "pageable_dtoh_steps",
        "steps with a pageable DtoH",
        "num",
        "steps that copy device-to-host into pageable memory" + _PAGEABLE_NOTE,
        shown_when_zero=False,
    ),
    _marker(
        "kernel_busy",
        "GPU busy, kernels only",
        "pct",
        "|∪ every step's kernels| / (b_last − b_first): the whole run",
        series=_P + "kernel_busy",
    ),
    _marker(
        "kernel_busy_steady",
        "GPU busy, kernels only, steady",
        "pct",
        "the same without the long steps (> 10 × the median step time: the loop paused)",
        series=_P + "kernel_busy",
    ),
    _marker("long_steps", "long steps", "num", "steps longer than 10 × the median step time", shown_when_zero=False),
)
