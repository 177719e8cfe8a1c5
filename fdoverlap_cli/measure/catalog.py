"""Every number fdoverlap shows, once: its name (the JSON key), label, unit and one-line definition.

Every renderer reads its rows from here: the run and nsys tables, the JSON summaries (the keys),
the figures' labels, and the definition table of docs/architecture.md (`markdown()`; a test keeps
the two equal). A new metric is a field of `PathMetrics` (or of what `source` names) plus one
entry below (the rows of the steps found without NVTX: measure/marker_catalog.py); the renderers
that show its `where` pick it up. The exposed-time rows come from `schema.EXPOSED`: a new host
stage gets its row there, not here.

`key` is a dotted path into the JSON of its source: `bubble_ns.mean` is the `mean` of the
`bubble_ns` summary of `PathMetrics.to_dict()`.
"""

from __future__ import annotations

from typing import Any

from fdoverlap_cli.measure.marker_catalog import COPY_CLASSES, MARKER_METRICS, MARKERS
from fdoverlap_cli.measure.metric_row import FIGURE, NSYS, RUN, STEPS, Metric
from fdoverlap_cli.measure.schema import EXPOSED, OTHER

STEP_TIME_SERIES = "per_step.step_time_ns"  # the series the wall time, tokens/s and the speedup are made of


def _m(key: str, label: str, unit: str, definition: str, **kw: Any) -> Metric:
    return Metric(key, label, unit, definition, **kw)


_STAGES = ("insert", "preprocess", "postprocess", "save")
_STEPS = STEP_TIME_SERIES
_EXPOSED_RULE = "each instant goes to the innermost host span covering it, waits split out"

PATH_METRICS = (
    _m(
        "steps",
        "measured steps",
        "num",
        "the steps every number of the path covers (the window, the steps both paths ran)",
    ),
    _m("batch_tokens", "batch tokens", "num", "Σ_k rows of step k's packed batch", where=(RUN,)),
    _m(
        "tokens",
        "output tokens",
        "num",
        "Σ_k tokens step k's message carried: what was emitted (a preemption marker sent in a token's place is none)",
        where=(RUN,),
    ),
    _m(
        "wall_ns",
        "wall time",
        "ms",
        "T: the first span's start to the last span's end over the measured steps",
        series=_STEPS,
    ),
    _m("tokens_per_s", "output tokens/s", "num", "output tokens / T", where=(RUN,), series=_STEPS),
    _m(
        "step_time_ns.mean",
        "step time (mean)",
        "us",
        "mean_k start(I_{k+1}) − start(I_k): the loop's period",
        series=_STEPS,
    ),
    _m(
        "itl_ns.mean",
        "ITL per step (mean)",
        "us",
        "mean_k end(S_{k+1}) − end(S_k): the inter-token latency, between consecutive steps' outputs reaching "
        "the reader",
        series="per_step.itl_ns",
    ),
    _m(
        "tpot_ns.mean",
        "TPOT per request (mean)",
        "us",
        "mean over requests of (t_last − t_first) / (n − 1), t the end of the save of the step that produced "
        "the token (serving benchmarks' TPOT); the requests whose tokens all lie in the measured steps",
        where=(RUN,),
        series="per_step.itl_ns",  # made of the per-step latencies: their pairing decides (a request is no unit)
    ),
    _m(
        "harness_ns_per_decode_step",
        "host harness / decode step",
        "us",
        "mean over decode-only steps of B_k minus the host's model launches: what the replay itself costs",
        where=(RUN,),
        series="per_step.harness_ns",
    ),
    _m(
        "launch_bound",
        "launch-bound steps",
        "pct",
        "share of steps k with launch_slack_k ≤ 0: the GPU ended the forward before the host ended P_k, the stage "
        "that launched it, so the forward ran at the host's launch rate and its time is the host's",
        gpu=True,
        series="per_step.launch_slack_ns",
    ),
    _m(
        "graph_steps",
        "steps replaying a CUDA graph",
        "num",
        "steps whose forward replayed the CUDA graph of its padded batch size (decode-only batches)",
        where=(RUN,),
    ),
    _m(
        "eager_steps",
        "steps launched eagerly",
        "num",
        "steps whose forward the host launched kernel by kernel (a prefill, graphs off, or past the largest size)",
        where=(RUN,),
    ),
    *(
        _m(
            f"host_stages.{stage}.mean_ns",
            f"host {stage} / step",
            "us",
            f"mean host time of one {stage} stage",
            where=(RUN,),
            series=f"per_step.stage_ns.{stage}",
        )
        for stage in _STAGES
    ),
    _m(
        "hidden_copies",
        "hidden: copies D_k",
        "pct",
        "Σ_k |D_k ∩ C_{k+1}| / Σ_k |D_k|: 0 by construction when the copies run on the compute stream, before C_{k+1}",
        gpu=True,
        series="per_step.hidden_copies",
        by_construction=(
            "copies_on_compute_stream",
            "0 by construction",
            "the DtoH copies run on the compute stream, after postprocess(k) and before C_{k+1} (FastDeploy's "
            "choice), so none can overlap it; --copy-stream separate puts them on a stream of their own",
        ),
    ),
    _m(
        "hidden_save_work",
        "hidden: save's work S'_k",
        "pct",
        "Σ_k |S'_k ∩ C_{k+1}| / Σ_k |S'_k|, S'_k = S_k ∖ W: the save without its waits",
        gpu=True,
        series="per_step.hidden_save_work",
    ),
    _m(
        "hidden",
        "hidden: copy ∪ save",
        "pct",
        "Σ_k |(D_k ∪ S_k) ∩ C_{k+1}| / Σ_k |D_k ∪ S_k|: the copies and the whole save, waits included",
        gpu=True,
        series="per_step.hidden",
    ),
    _m(
        "save_wait_share",
        "waiting share of S_k",
        "pct",
        "Σ_k |S_k ∩ W| / Σ_k |S_k|: the part of the save that waits for the GPU (its event, back-pressure)",
        gpu=True,
        series="per_step.save_wait_share",
    ),
    _m(
        "hidden_per_step.p50",
        "hidden p50 / step",
        "pct",
        "median over steps of |H_k ∩ C_{k+1}| / |H_k|, H_k = D_k ∪ S_k",
        gpu=True,
        series="per_step.hidden",
    ),
    _m(
        "hidden_per_step.p10",
        "hidden p10 / step",
        "pct",
        "10th percentile of the same",
        gpu=True,
        series="per_step.hidden",
    ),
    _m(
        "hidden_per_step.min",
        "hidden min / step",
        "pct",
        "the least-hidden step's fraction",
        gpu=True,
        series="per_step.hidden",
    ),
    _m(
        "bubble_ns.mean",
        "bubble (mean)",
        "us",
        "mean_k GPU idle between step k's device work and C_{k+1}",
        gpu=True,
        series="per_step.bubble_ns",
    ),
    *(
        _m(
            f"exposed.{category}.mean_ns",
            f"exposed: {label} / step",
            "us",
            "mean_k of the part of bubble_k the host spent in "
            + (label if category != OTHER else "no stage: between stages or outside the iteration")
            + f" ({_EXPOSED_RULE})",
            gpu=True,
            series=f"per_step.exposed_ns.{category}",
            shown_when_zero=False,
        )
        for category, label in EXPOSED
    ),
    _m(
        "exposed_share",
        "exposed host time / wall",
        "pct",
        "Σ_k bubble_k / T: the GPU idle between steps, which the exposed categories split and sum to",
        gpu=True,
        series="per_step.bubble_ns",
    ),
    _m(
        "gpu_busy",
        "GPU busy (stage-bounded)",
        "pct",
        "|∪_k (C_k ∪ D_k)| / (last GPU end − first GPU start), C_k a stage's interval: first to last kernel, or the "
        "GPU timestamps at its boundaries (gaps inside a stage count as busy)",
        gpu=True,
        series="per_step.bubble_ns",
    ),
    _m(
        "compute_mean_ns",
        "compute |C_k| (mean)",
        "us",
        "mean_k |C_k|: step k's forward and postprocess",
        gpu=True,
        series="per_step.compute_ns",
    ),
    _m(
        "limit_ns",
        "limit Σ max(G, B)",
        "ms",
        "Σ_k max(G_k, B_k), G_k = |C_k ∪ D_k|, B_k the host's busy time",
        gpu=True,
        series="per_step.limit_ns",
    ),
    _m(
        "per_step.step_time_ns",
        "step time",
        "us",
        "per step k: start(I_{k+1}) − start(I_k)",
        where=(STEPS,),
    ),
    _m("per_step.itl_ns", "ITL", "us", "per step k: end(S_{k+1}) − end(S_k)", where=(STEPS,)),
    _m(
        "per_step.host_busy_ns",
        "host busy B_k",
        "us",
        "per step k: |I_k| − |I_k ∩ W|, the iteration without its waits",
        where=(STEPS,),
    ),
    _m(
        "per_step.launch_slack_ns",
        "launch slack",
        "us",
        "per step k: end of C_k's first span (the forward) − end of P_k; ≤ 0 when the GPU waited for the launches",
        where=(STEPS,),
        gpu=True,
    ),
    _m("per_step.compute_ns", "compute |C_k|", "us", "per step k: |C_k|", where=(STEPS,), gpu=True),
    _m(
        "per_step.hidden",
        "hidden",
        "pct",
        "per step k: |(D_k ∪ S_k) ∩ C_{k+1}| / |D_k ∪ S_k|",
        where=(FIGURE, STEPS),
        gpu=True,
    ),
    _m(
        "per_step.bubble_ns",
        "bubble",
        "us",
        "per step k: the GPU's idle time between step k's device work and C_{k+1}",
        where=(FIGURE, STEPS),
        gpu=True,
    ),
    _m(
        "per_step.exposed_ns",
        "exposed host time",
        "us",
        f"per step k: bubble_k split by what the host was doing ({_EXPOSED_RULE}); the bars sum to the bubble",
        where=(FIGURE, STEPS),
        gpu=True,
    ),
)
COMPARISON_METRICS = (
    _m("speedup", "speedup", "num", "T_sync / T_overlap over the same steps", source="comparison", gpu=True),
    _m(
        "overlap_efficiency",
        "overlap efficiency",
        "pct",
        "(T_sync − T_overlap) / (T_sync − T_limit), T_limit the overlap path's limit",
        source="comparison",
        gpu=True,
    ),
)
NSYS_METRICS = (
    _m(
        "kernel_busy",
        "GPU busy (kernels only)",
        "pct",
        "|∪ C_k's kernels| / the GPU window: busy without the gaps between a stage's kernels (a CUDA graph "
        "traced as a whole counts as one record)",
        source="nsys",
        where=(NSYS,),
        gpu=True,
    ),
    *(
        _m(
            f"kernel_idle.{kind}_steps.kernel_busy",
            f"GPU busy (kernels only), {kind} steps",
            "pct",
            f"Σ busy / Σ (busy + idle) over the {which}: busy the ∪ C_k kernels each record adds, idle the gaps "
            "of the union ending at the step's records",
            source="nsys",
            where=(NSYS,),
            gpu=True,
        )
        for kind, which in (
            ("graph", "steps that launched a CUDA graph in a compute stage"),
            ("eager", "steps that launched no CUDA graph (the forward launched kernel by kernel)"),
        )
    ),
    _m(
        "kernel_bubble_ns.mean",
        "bubble, kernels only (mean)",
        "us",
        "mean_k GPU idle from step k's device work to the first kernel of C_{k+1} (timing kernels left out): the "
        "bubble and the launch of the first op after C_{k+1}'s stage-start timestamp",
        source="nsys",
        where=(NSYS,),
        gpu=True,
    ),
    _m(
        "work.compute_kernels.count",
        "kernels in C_k",
        "num",
        "kernels launched inside the compute stages",
        source="nsys",
        where=(NSYS,),
    ),
    _m(
        "work.graph_launches.count",
        "CUDA graph launches",
        "num",
        "cudaGraphLaunch calls inside the compute stages: the decode forward's replays",
        source="nsys",
        where=(NSYS,),
    ),
    _m(
        "work.dtoh_copies.count",
        "DtoH copies in D_k",
        "num",
        "device-to-host copies launched inside postprocess",
        source="nsys",
        where=(NSYS,),
    ),
    _m(
        "work.waits.count",
        "host waits",
        "num",
        "API calls that block the host until the GPU catches up",
        source="nsys",
        where=(NSYS,),
    ),
)
METRICS = (*PATH_METRICS, *COMPARISON_METRICS, *NSYS_METRICS, *MARKER_METRICS)
BY_KEY = {(m.source, m.key): m for m in METRICS}
# defined beside, named here too
__all__ = ["COPY_CLASSES", "FIGURE", "MARKERS", "MARKER_METRICS", "NSYS", "RUN", "STEPS", "Metric"]


def path_metric(key: str) -> Metric:
    """The path metric named `key`."""
    return BY_KEY[("path", key)]


def rows(where: str, *, on_gpu: bool = True, sources: tuple[str, ...] = ("path", "nsys")) -> tuple[Metric, ...]:
    """The per-path rows of the table `where` (RUN or NSYS), in the catalog's order; GPU rows only `on_gpu`."""
    return tuple(m for m in METRICS if m.source in sources and where in m.where and (on_gpu or not m.gpu))


def not_measurable(where: str) -> tuple[Metric, ...]:
    """The rows of `where`, and the comparison's numbers, that only the GPU's timing gives."""
    return tuple(m for m in METRICS if m.gpu and (where in m.where or m.source == "comparison"))


def markdown() -> str:
    """The definition table of docs/architecture.md."""
    lines = ["| JSON key | label | unit | definition |", "|---|---|---|---|"]
    for m in METRICS:
        key = m.key if m.source == "path" else f"{m.source}.{m.key}"
        cells = (f"`{key}`", m.label, m.unit, m.definition)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
