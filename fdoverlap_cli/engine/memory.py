"""What a replay allocates, estimated from the model and the trace before anything is allocated.

Device memory (the host's on a CPU): the weights; the KV cache; the step buffers (share_inputs: input_ids
and pre_ids are max_num_seqs × max_model_len, the rest a few values per slot); the logits and hidden rows
of every slot; the activations one layer's forward holds at once for the largest step's tokens; each CUDA
graph's static inputs and activations (decode capture sizes, GPU only). Host memory: the step tables
(one preallocated per path as it runs, and each finished path's copy). `check` refuses a replay whose
estimate passes 90% of what the device or host has, naming the part that takes most and what sets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fdoverlap_cli.engine.model import ModelConfig
from fdoverlap_cli.engine.recorder import WAITS_PER_STEP
from fdoverlap_cli.errors import FdoError
from fdoverlap_cli.measure.schema import GPU_POINTS, HOST_COLUMNS, WAIT_COLUMNS
from fdoverlap_cli.trace import Trace

USABLE = 0.9  # the share of a device's or the host's memory a replay may plan to use
WEIGHTS, KV, BUFFERS, LOGITS, ACTIVATIONS, GRAPHS, STEP_TABLES = (
    "weights",
    "KV cache",
    "step buffers",
    "logits",
    "activations",
    "CUDA graphs",
    "step tables",
)


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes per part, on the device the model runs on and on the host (on a CPU both are the host)."""

    device: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)
    causes: dict[str, str] = field(default_factory=dict)  # part -> what sets its size, and what needs less


def largest_batch(trace: Trace) -> int:
    """An upper bound of the tokens of any step: its prefill chunks plus every slot's decode token, within
    the step budget."""
    c = trace.config
    peak = max((sum(i.length for i in step.insert) for step in trace.steps), default=0) + c.max_num_seqs
    return min(peak, c.max_num_batched_tokens)


def activation_bytes_per_token(m: ModelConfig) -> int:
    """What one layer's forward holds at once per token: normed input, residual, QKV, attention out,
    projections, gate/up and the activation."""
    return (5 * m.hidden_size + m.qkv_size + m.num_q_heads * m.head_dim + 3 * m.ffn_size) * m.dtype_bytes


def estimate(m: ModelConfig, trace: Trace, paths: int, graph_sizes: tuple[int, ...] = ()) -> MemoryNeed:
    """The estimate for replaying `trace` through `paths` paths with model `m` (graphs of `graph_sizes`)."""
    c = trace.config
    bsz, length = c.max_num_seqs, c.max_model_len
    steps = len(trace.steps) + 1
    tokens = largest_batch(trace)
    per_token = activation_bytes_per_token(m)
    device = {
        WEIGHTS: m.weight_bytes(),
        KV: m.kv_cache_bytes(bsz, length),
        BUFFERS: bsz * 8 * (length + min(c.max_num_batched_tokens, length)) + bsz * 64,
        LOGITS: bsz * (m.vocab_size + m.hidden_size) * m.dtype_bytes + bsz * 16,
        ACTIVATIONS: tokens * (per_token + m.hidden_size * m.dtype_bytes + 16),
        GRAPHS: sum(s * (per_token + m.hidden_size * m.dtype_bytes + 12) + 4 * (bsz + 1) for s in graph_sizes),
        STEP_TABLES: steps * len(GPU_POINTS) * 8,  # the GPU timestamps, on the device
    }
    table = steps * 8 * (len(HOST_COLUMNS) + WAITS_PER_STEP * len(WAIT_COLUMNS))
    host = {STEP_TABLES: table * (paths + 1)}
    causes = {
        WEIGHTS: f"{m.num_layers} layers of model '{m.name}': fewer layers (--layers) or a smaller --preset need less",
        KV: (
            f"max_num_seqs {bsz:,} × max_model_len {length:,} × {m.num_layers} layers: fewer slots or a shorter "
            "max_model_len in the trace need less, as do fewer layers (--layers)"
        ),
        BUFFERS: f"max_num_seqs {bsz:,} × max_model_len {length:,}: fewer slots or a shorter max_model_len in the "
        "trace need less",
        LOGITS: f"max_num_seqs {bsz:,} × vocab_size {m.vocab_size:,}: fewer slots in the trace need less",
        ACTIVATIONS: f"the largest step's {tokens:,} tokens: a smaller max_num_batched_tokens in the trace needs less",
        GRAPHS: f"{len(graph_sizes)} decode capture sizes up to {max(graph_sizes, default=0)}: --cuda-graph off "
        "needs less",
        STEP_TABLES: f"the trace's {steps - 1:,} steps: a shorter trace needs less",
    }
    return MemoryNeed(device, host, causes)


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check(need: MemoryNeed, *, on_gpu: bool, device_bytes: int | None, host_bytes: int | None) -> None:
    """Raise FdoError, naming the largest part and its cause, when the estimate passes USABLE of the memory
    there is (an unknown total is not checked)."""
    budgets = [("GPU", need.device, device_bytes), ("host", need.host, host_bytes)]
    if not on_gpu:  # one memory: the host's
        both = {k: need.device.get(k, 0) + need.host.get(k, 0) for k in {*need.device, *need.host}}
        budgets = [("host", both, host_bytes)]
    for where, parts, total in budgets:
        needed = sum(parts.values())
        if not total or needed <= USABLE * total:
            continue
        ranked = sorted((p for p in parts.items() if p[1]), key=lambda p: -p[1])
        shown = ", ".join(f"{name} {_size(n)}" for name, n in ranked[:3])
        top = ranked[0][0]
        raise FdoError(
            f"the replay needs {_size(needed)} of {where} memory ({shown}) and the {where} has {_size(total)}; "
            f"most of it is the {top}, set by {need.causes[top]}"
        )
