"""decoder_layer is exactly the layer the separate ops compute, on the CPU; its CUDA kernel matches the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from fdoverlap_cli import kernel_choices
from tests.ops.inputs import packed_attention_batch, random_attention_batch
from tests.ops.tensors import cpu, gpu, host

HQ, HKV, D, H, F = 4, 2, 16, 64, 96
EPS = 1e-5
# (Hq, Hkv, D) of the GPU tests: the tiny preset's heads, a 1B-class head (64) and an 8B-class head (128).
GPU_HEADS = [(HQ, HKV, D), (8, 2, 64), (4, 1, 128)]
# (hidden, ffn) at which the decode GEMM's plan takes gate_up (K = hidden a multiple of 64, N = 2 ffn >= 16,896 a
# multiple of 256) at a batch of 65 .. 128 rows in float16; the layer's other GEMMs are paddle.matmul's.
DECODE_GEMM_SIZES = (128, 8448)


def _batch(rng, dtype, heads, decode: bool, large: bool):
    """A packed batch over random caches: prefill chunks, decode rows and padding, or decode rows only (11 of 12
    slots a row at random context lengths, one padding row). large: 100 decode rows (99 slots and a padding
    row), or two chunks of 60 and 35 rows, 30 decode rows and 3 padding rows (128)."""
    hq, hkv, d = heads
    if large:
        lens = [1] * 99 + [0] if decode else [60, 35] + [1] * 30 + [0]
        ctx = rng.integers(0, 150, len(lens))
        return packed_attention_batch(rng, dtype, hq, hkv, d, lens, ctx, 256, 1 if decode else 3)
    if decode:
        return packed_attention_batch(rng, dtype, hq, hkv, d, [1] * 11 + [0], rng.integers(0, 700, 12), 800, 1)
    return random_attention_batch(rng, dtype, hq, hkv, d)


def _layer_inputs(seed: int, dtype, heads=(HQ, HKV, D), decode: bool = False, sizes=(H, F), large: bool = False):
    """A layer's inputs over _batch's batch; sizes: (hidden, ffn)."""
    hq, hkv, d = heads
    hidden, ffn = sizes
    rng = np.random.default_rng(seed)
    _qkv, keys, values, batch, cu, dec = _batch(rng, dtype, heads, decode, large)
    rows = len(batch)

    def w(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    weights = [w(hidden, scale=1), w(hidden, (hq + 2 * hkv) * d), w(hq * d, hidden), w(hidden, scale=1)]
    weights += [w(hidden, 2 * ffn), w(ffn, hidden)]
    return w(rows, hidden, scale=1), w(rows, hidden, scale=1), weights, keys, values, (batch, cu, dec), heads


def _separate_ops(ops, place, x, residual, weights, keys, values, batch, heads, first_layer):
    import paddle

    # The GEMM decoder_layer runs, as the model's op-by-op path picks it: on the GPU gemm_decode without its
    # fused silu_mul with FDOVERLAP_GEMM unset, empty or decode, the gemm op with tuned; else paddle.matmul.
    mode = kernel_choices.gemm_mode() if place is gpu else "paddle"
    matmul = {"tuned": ops.gemm, "decode": lambda a, b: ops.gemm_decode(a, b, False)}.get(mode, paddle.matmul)
    scale = heads[2] ** -0.5
    attn_norm, qkv_w, out_w, ffn_norm, gate_up_w, down_w = (place(a) for a in weights)
    x, keys, values = place(x), place(keys), place(values)
    batch = [place(a) for a in batch]
    if first_layer:
        h, residual = ops.fdo_rms_norm(x, attn_norm, EPS), x
    else:
        h, residual = ops.add_rms_norm(x, place(residual), attn_norm, EPS)
    qkv = matmul(h, qkv_w)
    ops.write_kv_cache(qkv, keys, values, *batch, *heads)
    attn = ops.attention(qkv, keys, values, *batch, *heads, scale)
    h, residual = ops.add_rms_norm(matmul(attn, out_w), residual, ffn_norm, EPS)
    out = matmul(ops.silu_mul(matmul(h, gate_up_w)), down_w)
    return [host(t) for t in (out, residual, keys, values)]


def _fused(ops, place, x, residual, weights, keys, values, batch, heads, first_layer):
    keys, values = place(keys), place(values)
    out, residual_out, *_ = ops.decoder_layer(
        place(x), place(residual), *(place(a) for a in weights), keys, values, *(place(a) for a in batch),
        *heads, EPS, heads[2] ** -0.5, first_layer,
    )  # fmt: skip
    return [host(t) for t in (out, residual_out, keys, values)]


@pytest.mark.parametrize("first_layer", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_layer_is_the_separate_ops(ops, seed, first_layer):
    args = _layer_inputs(seed, np.float32)
    for fused, separate in zip(
        _fused(ops, cpu, *args, first_layer), _separate_ops(ops, cpu, *args, first_layer), strict=True
    ):
        np.testing.assert_array_equal(fused, separate)


def test_decoder_layer_writes_the_caches_in_place(ops):
    x, residual, weights, keys, values, batch, heads = _layer_inputs(3, np.float32)
    k, v = cpu(keys), cpu(values)
    ops.decoder_layer(cpu(x), cpu(residual), *(cpu(a) for a in weights), k, v, *(cpu(a) for a in batch),
                      *heads, EPS, D**-0.5, False)  # fmt: skip
    written = batch[0] >= 0
    assert written.any()
    assert not np.array_equal(host(k), keys)
    assert not np.array_equal(host(v), values)


@pytest.mark.gpu
@pytest.mark.parametrize("gemm", [None, "decode"], ids=["env-gemm", "decode-gemm"])
@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("heads", GPU_HEADS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_decoder_layer_on_the_gpu_is_the_separate_ops(ops, monkeypatch, dtype, heads, decode, gemm):
    """Bitwise, with the GEMM choice of the environment and with FDOVERLAP_GEMM=decode, where the layer fuses
    silu_mul into gate_up's GEMM and the separate ops run gemm_decode then silu_mul (at a batch and sizes whose
    gate_up the kernel's plan takes in float16; float32 takes paddle.matmul)."""
    if gemm is not None:
        monkeypatch.setenv(kernel_choices.GEMM_ENV, gemm)
    large = gemm == "decode"
    args = _layer_inputs(4, dtype, heads, decode, DECODE_GEMM_SIZES if large else (H, F), large)
    if large:
        assert 65 <= len(args[0]) <= 128
    for fused, separate in zip(_fused(ops, gpu, *args, False), _separate_ops(ops, gpu, *args, False), strict=True):
        np.testing.assert_array_equal(fused, separate)


@pytest.mark.gpu
def test_decoder_layer_rejects_an_unknown_gemm_choice(ops, monkeypatch):
    monkeypatch.setenv(kernel_choices.GEMM_ENV, "nope")
    with pytest.raises(
        Exception, match=r"decoder_layer: FDOVERLAP_GEMM=nope is not a GEMM choice \(decode, paddle, tuned\)"
    ):
        _fused(ops, gpu, *_layer_inputs(4, np.float16), False)


@pytest.mark.gpu
@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("heads", GPU_HEADS)
def test_decoder_layer_cuda_matches_cpu(ops, heads, decode):
    """float32, within the tolerance of cuBLASLt (TF32 off) against paddle's CPU GEMM through four GEMMs and two
    norms."""
    import paddle

    try:
        paddle.matmul(cpu(np.eye(2, dtype=np.float32)), cpu(np.eye(2, dtype=np.float32)))
    except RuntimeError as e:  # a paddle-gpu install without its CPU BLAS (libmklml_intel.so)
        pytest.skip(f"paddle's CPU matmul does not run here: {str(e).splitlines()[0][:120]}")
    args = _layer_inputs(5, np.float32, heads, decode)
    for on_gpu, on_cpu in zip(_fused(ops, gpu, *args, False), _fused(ops, cpu, *args, False), strict=True):
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
