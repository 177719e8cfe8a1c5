"""The synthetic decoder: real structure, seeded weights, device work only through the project's ops and GEMMs.

Embedding; per layer RMSNorm, QKV GEMM, KV cache write and attention, output GEMM, RMSNorm,
gate/up GEMM, SiLU·mul, down GEMM (residual adds fused into the norms); final norm; lm_head GEMM.
Compute therefore scales with batch, context and layer shapes the way a real model's does. The
tokens it emits are deterministic but meaningless: stop conditions come from the trace.
On a GPU the GEMMs are as FDOVERLAP_GEMM picks (fdoverlap_cli.kernel_choices.GEMM_ENV; decoder_layer reads
the same variable): the op library's decode GEMM (gemm_decode, the default), paddle.matmul, or its tuned cuBLASLt op
(gemm); on the CPU paddle.matmul.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fdoverlap_cli import kernel_choices
from fdoverlap_cli.engine.parallel import Shard, shard_weight
from fdoverlap_cli.errors import FdoError, OptionError


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the synthetic decoder."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    dtype: str  # "float32" or "float16" (bf16 matmul returns zeros on paddlepaddle-gpu 2.6.2 on Hopper)
    rms_eps: float = 1e-5
    seed: int = 1234

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_layers", "num_q_heads", "num_kv_heads", "head_dim", "ffn_size"):
            if getattr(self, f) < 1:
                raise FdoError(f"model: {f} must be at least 1, got {getattr(self, f)}")
        if self.num_q_heads % self.num_kv_heads:
            raise FdoError(
                f"model: num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.dtype not in ("float32", "float16"):
            raise FdoError(f"model: dtype must be float32 or float16, got '{self.dtype}'")
        if self.vocab_size < 2:
            raise FdoError(f"model: vocab_size must be at least 2 (the end token and one more), got {self.vocab_size}")
        if not (math.isfinite(self.rms_eps) and self.rms_eps >= 0):
            raise FdoError(f"model: rms_eps must be a finite number >= 0, got {self.rms_eps}")
        if abs(self.seed) > 2**40:  # the weight seeds (seed * 1_000_003 + n) are int64
            raise FdoError(f"model: seed must be within ±2^40, got {self.seed}")

    @property
    def qkv_size(self) -> int:
        return (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim

    @property
    def dtype_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    def weight_bytes(self) -> int:
        """Bytes of all weights."""
        h, f = self.hidden_size, self.ffn_size
        per_layer = h * self.qkv_size + self.num_q_heads * self.head_dim * h + h * 2 * f + f * h + 2 * h
        return (self.num_layers * per_layer + 2 * self.vocab_size * h + h) * self.dtype_bytes

    def kv_cache_bytes(self, slots: int, max_model_len: int) -> int:
        """Bytes of the KV cache for `slots` sequences of up to `max_model_len` tokens."""
        return 2 * self.num_layers * slots * max_model_len * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Layer shapes of public models of each class; the layer count is adjustable (--layers).
PRESETS: dict[str, ModelConfig] = {
    # Replays the default trace on a 2-core CPU in seconds.
    "tiny": ModelConfig("tiny", 512, 64, 2, 4, 2, 16, 128, "float32"),
    # A 1B-class layer (Llama-3.2-1B shapes).
    "1b": ModelConfig("1b", 128256, 2048, 16, 32, 8, 64, 8192, "float16"),
    # An 8B-class layer (Llama-3-8B shapes).
    "8b": ModelConfig("8b", 128256, 4096, 32, 32, 8, 128, 14336, "float16"),
}

_DIMENSION_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}


def model_config(preset: str, layers: int | None = None, dims: str | None = None) -> ModelConfig:
    """A preset, optionally with another layer count and explicit dimensions ('hidden_size=1024,ffn_size=4096')."""
    if preset not in PRESETS:
        raise OptionError("preset", f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    cfg = PRESETS[preset]
    changes: dict[str, Any] = {}
    for item in filter(None, (dims or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _DIMENSION_KEYS:
            raise OptionError(
                "dims", f"expected key=value with key in {', '.join(sorted(_DIMENSION_KEYS))}, got '{item}'"
            )
        kind = type(getattr(cfg, key))
        try:
            changes[key] = kind(value.strip())
        except ValueError:
            raise OptionError("dims", f"{key} expects {kind.__name__}, got '{value.strip()}'") from None
    if layers is not None:
        changes["num_layers"] = layers
    if changes:
        cfg = dataclasses.replace(cfg, name=f"{preset}*" if dims else preset, **changes)
    return cfg


@dataclass
class _Layer:
    attn_norm: Any
    qkv: Any
    out: Any
    ffn_norm: Any
    gate_up: Any
    down: Any


class SyntheticDecoder:
    """Seeded weights on the device and a forward pass over a packed batch."""

    def __init__(
        self,
        cfg: ModelConfig,
        device: Any,
        ops: Any,
        fused_layers: bool = True,
        shard: Shard | None = None,
        all_reduce: Callable[[Any], None] | None = None,
    ) -> None:
        """`shard`: the part of the weights this tensor-parallel rank holds (engine/parallel.py); `all_reduce`
        sums a row-parallel GEMM's partial output over the ranks (None with one rank)."""
        self.cfg = cfg
        self.shard = shard = shard or Shard()
        self.all_reduce = all_reduce
        # One op per layer (decoder_layer) or one per kernel: the same math, a different host cost per step.
        # A sharded layer sums its output projection inside the layer, which one op cannot: op by op.
        self.fused_layers = fused_layers and shard.world == 1
        self._heads = shard.heads(cfg)
        self.device = device
        self.ops = ops
        self.matmul = self._matmul(kernel_choices.gemm_mode())  # checked on the CPU too, where paddle.matmul runs
        h, seed = cfg.hidden_size, cfg.seed
        counter = iter(range(1, 1 << 30))

        def weight(shape: list[int], fan_in: int, blocks: list[tuple[int, int, int]] | None = None,
                   full: tuple[int, int] | None = None, row_offset: int = 0) -> Any:  # fmt: skip
            w = device.empty(shape, cfg.dtype)
            n_seed, scale = seed * 1_000_003 + next(counter), 1.0 / math.sqrt(fan_in)
            if shard.world == 1 or full is None:
                ops.fill_random_(w, n_seed, scale)
            else:
                shard_weight(ops, w, n_seed, scale, full, blocks or [(0, 0, full[1])], row_offset)
            return w

        def ones(n: int) -> Any:
            w = device.empty([n], cfg.dtype)
            ops.fill_(w, 1.0)
            return w

        r, (q, kv, d), f = shard.rank, self._heads, shard.ffn(cfg)
        hq, hkv, big_f = cfg.num_q_heads * d, cfg.num_kv_heads * d, cfg.ffn_size
        # Column-parallel: this rank's query, key and value heads; its gate and up columns.
        qkv_blocks = [
            (r * q * d, 0, q * d),
            (hq + r * kv * d, q * d, kv * d),
            (hq + hkv + r * kv * d, (q + kv) * d, kv * d),
        ]
        gate_up_blocks = [(r * f, 0, f), (big_f + r * f, f, f)]
        self.embed = weight([cfg.vocab_size, h], 1)
        self.layers = [
            _Layer(
                attn_norm=ones(h),
                qkv=weight([h, (q + 2 * kv) * d], h, qkv_blocks, (h, cfg.qkv_size)),
                # Row-parallel: this rank's rows of the output and down projections.
                out=weight([q * d, h], hq, None, (hq, h), r * q * d),
                ffn_norm=ones(h),
                gate_up=weight([h, 2 * f], h, gate_up_blocks, (h, 2 * big_f)),
                down=weight([f, h], big_f, None, (big_f, h), r * f),
            )
            for _ in range(cfg.num_layers)
        ]
        self.final_norm = ones(h)
        self.lm_head = weight([h, cfg.vocab_size], h)
        self.attn_scale = 1.0 / math.sqrt(cfg.head_dim)

    def new_kv_cache(self, slots: int, max_model_len: int) -> list[tuple[Any, Any]]:
        """One (key, value) pair per layer, [slots, max_model_len, kv_heads, head_dim]; written before read."""
        c = self.cfg
        shape = [slots, max_model_len, self._heads[1], c.head_dim]
        return [(self.device.empty(shape, c.dtype), self.device.empty(shape, c.dtype)) for _ in range(c.num_layers)]

    def forward(
        self,
        ids: Any,
        batch_id_per_token: Any,
        cu_seqlens_q: Any,
        seq_lens_decoder: Any,
        kv_cache: list[tuple[Any, Any]],
    ) -> Any:
        """Hidden states [T, H] of the packed tokens, after the final norm."""
        c, ops = self.cfg, self.ops
        batch = (batch_id_per_token, cu_seqlens_q, seq_lens_decoder)
        x = ops.embedding(ids, self.embed)
        residual = x
        for i, (layer, (k_cache, v_cache)) in enumerate(zip(self.layers, kv_cache, strict=True)):
            if self.fused_layers:
                x, residual, *_ = ops.decoder_layer(
                    x, residual, layer.attn_norm, layer.qkv, layer.out, layer.ffn_norm, layer.gate_up, layer.down,
                    k_cache, v_cache, *batch, *self._heads, c.rms_eps, self.attn_scale, i == 0,
                )  # fmt: skip
            else:
                x, residual = self._layer_op_by_op(layer, x, residual if i else None, k_cache, v_cache, batch)
        out, _ = ops.add_rms_norm(x, residual, self.final_norm, c.rms_eps)
        return out

    def _layer_op_by_op(self, layer: _Layer, x: Any, residual: Any, k_cache: Any, v_cache: Any, batch: tuple) -> tuple:
        """The same layer as `decoder_layer`, one op per kernel: the host launches each one from Python."""
        c, ops, mm = self.cfg, self.ops, self.matmul
        if residual is None:
            h, residual = ops.fdo_rms_norm(x, layer.attn_norm, c.rms_eps), x
        else:
            h, residual = ops.add_rms_norm(x, residual, layer.attn_norm, c.rms_eps)
        qkv = mm(h, layer.qkv)
        ops.write_kv_cache(qkv, k_cache, v_cache, *batch, *self._heads)
        attn = ops.attention(qkv, k_cache, v_cache, *batch, *self._heads, self.attn_scale)
        h, residual = ops.add_rms_norm(self._reduced(mm(attn, layer.out)), residual, layer.ffn_norm, c.rms_eps)
        return self._reduced(mm(ops.silu_mul(mm(h, layer.gate_up)), layer.down)), residual

    def _matmul(self, mode: str) -> Callable[[Any, Any], Any]:
        """The op-by-op path's GEMM for an FDOVERLAP_GEMM choice: the chosen op on a GPU, else paddle.matmul."""
        if self.device.is_gpu and mode == "tuned":
            return self.ops.gemm
        if self.device.is_gpu and mode == "decode":
            return lambda x, w: self.ops.gemm_decode(x, w, False)
        return self.device.paddle.matmul

    def _reduced(self, partial: Any) -> Any:
        """A row-parallel GEMM's output summed over the ranks (itself with one rank)."""
        if self.all_reduce is not None:
            self.all_reduce(partial)
        return partial

    def compute_logits(self, hidden_last: Any) -> Any:
        """Logits [bsz, V] of each slot's last hidden row."""
        return self.matmul(hidden_last, self.lm_head)
