"""The model kernels against the NumPy reference, on the CPU.

Tolerances: both sides compute in float32 but sum in different orders, so float32 results agree to
~1e-5 relative; float16 outputs are rounded from such float32 values, so they may differ by one
float16 ulp (~1e-3 relative). Integer and copy-only outputs must match exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdoverlap_cli import kernel_choices
from fdoverlap_cli.errors import FdoError
from tests.conftest import REPO
from tests.ops import reference as ref
from tests.ops.inputs import random_attention_batch
from tests.ops.tensors import cpu, host

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=30, deadline=None)
FLOATS = st.sampled_from([np.float32, np.float16])
TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float16: {"rtol": 2e-3, "atol": 2e-3}}


def assert_close(got: np.ndarray, want: np.ndarray, dtype) -> None:
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), **TOLERANCE[dtype])


@FAST
@given(seed=SEEDS, rows=st.integers(0, 9), dtype=FLOATS)
def test_embedding_matches_reference(ops, seed, rows, dtype):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((11, 6)).astype(dtype)
    ids = rng.integers(-2, 13, rows).astype(np.int64)  # -1 padding rows and ids past the vocabulary
    got = host(ops.embedding(cpu(ids), cpu(table)))
    np.testing.assert_array_equal(got, ref.embedding(ids, table))


@FAST
@given(seed=SEEDS, rows=st.integers(0, 7), hidden=st.integers(1, 40), dtype=FLOATS)
def test_fdo_rms_norm_matches_reference(ops, seed, rows, hidden, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, hidden)).astype(dtype)
    weight = rng.standard_normal(hidden).astype(dtype)
    got = host(ops.fdo_rms_norm(cpu(x), cpu(weight), 1e-6))
    assert_close(got, ref.rms_norm(x, weight, 1e-6), dtype)


@FAST
@given(seed=SEEDS, rows=st.integers(0, 7), hidden=st.integers(1, 40), dtype=FLOATS)
def test_add_rms_norm_matches_reference(ops, seed, rows, hidden, dtype):
    rng = np.random.default_rng(seed)
    x, residual = (rng.standard_normal((rows, hidden)).astype(dtype) for _ in range(2))
    weight = rng.standard_normal(hidden).astype(dtype)
    out, residual_out = ops.add_rms_norm(cpu(x), cpu(residual), cpu(weight), 1e-5)
    want_out, want_residual = ref.add_rms_norm(x, residual, weight, 1e-5)
    np.testing.assert_array_equal(host(residual_out), want_residual)  # one rounded add: exact
    assert_close(host(out), want_out, dtype)


@FAST
@given(seed=SEEDS, rows=st.integers(0, 7), half=st.integers(1, 20), dtype=FLOATS)
def test_silu_mul_matches_reference(ops, seed, rows, half, dtype):
    rng = np.random.default_rng(seed)
    gate_up = (4 * rng.standard_normal((rows, 2 * half))).astype(dtype)
    assert_close(host(ops.silu_mul(cpu(gate_up))), ref.silu_mul(gate_up), dtype)


HEADS = st.sampled_from([(1, 1, 4), (4, 2, 8), (6, 2, 3), (2, 2, 32)])  # (Hq, Hkv, D): MHA, GQA, odd D


@FAST
@given(seed=SEEDS, heads=HEADS, dtype=FLOATS)
def test_write_kv_cache_matches_reference(ops, seed, heads, dtype):
    hq, hkv, d = heads
    rng = np.random.default_rng(seed)
    qkv, keys, values, batch, cu, dec = random_attention_batch(rng, dtype, hq, hkv, d)
    key_t, value_t = cpu(keys), cpu(values)
    pointers = key_t.data_ptr(), value_t.data_ptr()
    ops.write_kv_cache(qkv_t := cpu(qkv), key_t, value_t, cpu(batch), cpu(cu), cpu(dec), hq, hkv, d)
    assert (key_t.data_ptr(), value_t.data_ptr()) == pointers
    want_k, want_v = ref.write_kv_cache(qkv, keys, values, batch, cu, dec, hq, hkv, d)
    np.testing.assert_array_equal(host(key_t), want_k)
    np.testing.assert_array_equal(host(value_t), want_v)
    np.testing.assert_array_equal(host(qkv_t), qkv)


@FAST
@given(seed=SEEDS, heads=HEADS, dtype=FLOATS)
def test_attention_matches_reference(ops, seed, heads, dtype):
    hq, hkv, d = heads
    rng = np.random.default_rng(seed)
    qkv, keys, values, batch, cu, dec = random_attention_batch(rng, dtype, hq, hkv, d)
    keys, values = ref.write_kv_cache(qkv, keys, values, batch, cu, dec, hq, hkv, d)
    scale = float(d) ** -0.5
    got = host(ops.attention(*map(cpu, (qkv, keys, values, batch, cu, dec)), hq, hkv, d, scale))
    want = ref.attention(qkv, keys, values, batch, cu, dec, hq, hkv, d, scale)
    assert_close(got, want, dtype)
    assert not got[batch < 0].any()  # padding rows are zero


def test_attention_of_a_single_position_returns_its_value(ops):
    qkv = np.arange(12, dtype=np.float32).reshape(1, 12)  # Hq = Hkv = 1, D = 4
    cache = np.zeros((1, 3, 1, 4), np.float32)
    args = [cpu(np.array([0], np.int32)), cpu(np.array([0, 1], np.int32)), cpu(np.array([0], np.int32))]
    key_t, value_t = cpu(cache), cpu(cache)
    ops.write_kv_cache(cpu(qkv), key_t, value_t, *args, 1, 1, 4)
    out = host(ops.attention(cpu(qkv), key_t, value_t, *args, 1, 1, 4, 0.5))
    np.testing.assert_array_equal(out, qkv[:, 8:])


@FAST
@given(seed=SEEDS, bsz=st.integers(0, 6), vocab=st.integers(1, 40), dtype=FLOATS)
def test_sample_greedy_matches_reference(ops, seed, bsz, vocab, dtype):
    rng = np.random.default_rng(seed)
    logits = rng.integers(-3, 4, (bsz, vocab)).astype(dtype)  # few distinct values: many ties
    logits[rng.random((bsz, vocab)) < 0.1] = np.nan
    banned = int(rng.integers(-1, vocab))
    got = host(ops.sample_greedy(cpu(logits), banned))
    np.testing.assert_array_equal(got, ref.sample_greedy(logits, banned))


def test_sample_greedy_edge_cases(ops):
    nan, inf = np.nan, np.inf
    logits = np.array(
        [
            [1.0, 3.0, 3.0, 2.0],  # tie: the lowest id
            [9.0, 1.0, 1.0, 0.0],  # the banned argmax is skipped, then the tie goes to the lowest id
            [nan, -inf, nan, -5.0],  # NaN never wins over a number, even -inf
            [nan, nan, nan, nan],  # all NaN: the lowest id that is not banned
        ],
        np.float32,
    )
    assert host(ops.sample_greedy(cpu(logits), 0)).ravel().tolist() == [1, 1, 3, 1]
    assert host(ops.sample_greedy(cpu(logits), -1)).ravel().tolist() == [1, 0, 3, 0]
    assert host(ops.sample_greedy(cpu(np.zeros((2, 1), np.float32)), 0)).ravel().tolist() == [-1, -1]


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(np.bool_, 1.0), (np.int32, -7.0), (np.int64, 123456.0), (np.float32, 0.1), (np.float16, 0.1)],
)
def test_fill_writes_every_element_in_place(ops, dtype, value):
    x = cpu(np.zeros((3, 5), dtype))
    pointer = x.data_ptr()
    ops.fill_(x, value)
    assert x.data_ptr() == pointer
    np.testing.assert_array_equal(host(x), np.full((3, 5), np.float32(value)).astype(dtype))


def test_fill_float16_rounds_like_numpy(ops):
    # Ties, subnormals, the largest half, overflow to inf, NaN and signed zero.
    values = [
        0.0,
        -0.0,
        1.0 + 2.0**-11,
        1.0 + 3 * 2.0**-11,
        2.0**-24,
        3 * 2.0**-26,
        2.0**-25,
        65504.0,
        65520.0,
        65519.0,
        -1e6,
        1e-8,
        5.96e-8,
        np.nan,
        np.inf,
        0.333333,
        2.0**-14 - 2.0**-25,
    ]
    values += list(np.random.default_rng(0).standard_normal(200) * 1e3)
    x = cpu(np.zeros(1, np.float16))
    for value in values:
        ops.fill_(x, float(value))
        with np.errstate(over="ignore"):
            want = np.float32(value).astype(np.float16)
        assert host(x).view(np.uint16)[0] == want.view(np.uint16) or (np.isnan(want) and np.isnan(host(x)[0]))


def test_fill_rejects_a_fraction_for_an_integer_tensor(ops):
    with pytest.raises(OSError, match=r"fill_: value 0\.5 is not an integer"):
        ops.fill_(cpu(np.zeros(3, np.int64)), 0.5)


@FAST
@given(seed=st.integers(-(2**63), 2**63 - 1), n=st.integers(1, 300), scale=st.floats(0.001, 10), dtype=FLOATS)
def test_fill_random_is_bit_identical_to_numpy(ops, seed, n, scale, dtype):
    x = cpu(np.zeros(n, dtype))
    ops.fill_random_(x, seed, scale)
    want = ref.fill_random((n,), dtype, seed, scale)
    np.testing.assert_array_equal(host(x).view(np.uint8), want.view(np.uint8))


def test_fill_random_is_uniform_in_the_scaled_range(ops):
    x = cpu(np.zeros((200, 500), np.float32))
    ops.fill_random_(x, 7, 0.5)
    values = host(x)
    assert values.min() >= -0.5 and values.max() < 0.5
    assert abs(values.mean()) < 0.01 and abs(values.std() - 0.5 / np.sqrt(3)) < 0.01
    other = cpu(np.zeros((200, 500), np.float32))
    ops.fill_random_(other, 8, 0.5)
    assert not np.array_equal(host(other), values)  # another seed, other weights


@given(seed=SEEDS)
@FAST
def test_gemm_is_paddle_matmul_on_the_cpu(ops, seed):
    """On the CPU the gemm op is paddle.matmul (float32: paddle's CPU matmul has no float16), which the model
    uses there itself; the op exists for the GPU."""
    import paddle

    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 40, 3))
    x, w = (rng.standard_normal(shape).astype(np.float32) for shape in ((m, k), (k, n)))
    np.testing.assert_array_equal(host(ops.gemm(cpu(x), cpu(w))), host(paddle.matmul(cpu(x), cpu(w))))


def test_gemm_names_match_the_op_library(monkeypatch):
    """fdoverlap_cli.ops mirrors gemm.h's FDOVERLAP_GEMM and its choices (decoder_layer reads the variable in
    C++, the op-by-op model path in Python), gemm.cc's GemmMode lists them in their order (ModeFromEnv casts a
    name's index), unset or empty is the first, and an unknown choice is an error."""
    header = (REPO / "custom_ops" / "model" / "gemm.h").read_text()
    names = re.search(r"kGemmModes\[\] = \{([^}]*)\}", header).group(1)
    assert tuple(re.findall(r'"([^"]+)"', names)) == kernel_choices.GEMM_MODES
    source = (REPO / "custom_ops" / "model" / "gemm.cc").read_text()
    enum = re.search(r"enum class GemmMode \{([^}]*)\}", source).group(1)
    assert [e.strip() for e in enum.split(",")] == [f"k{mode.capitalize()}" for mode in kernel_choices.GEMM_MODES]
    assert f'kGemmEnv = "{kernel_choices.GEMM_ENV}"' in header
    monkeypatch.delenv(kernel_choices.GEMM_ENV, raising=False)
    assert kernel_choices.gemm_mode() == "decode"
    for mode in ("decode", "paddle", "tuned"):
        monkeypatch.setenv(kernel_choices.GEMM_ENV, mode)
        assert kernel_choices.gemm_mode() == mode
    monkeypatch.setenv(kernel_choices.GEMM_ENV, "")
    assert kernel_choices.gemm_mode() == "decode"
    monkeypatch.setenv(kernel_choices.GEMM_ENV, "nope")
    with pytest.raises(FdoError, match=r"FDOVERLAP_GEMM=nope is not a GEMM choice \(decode, paddle, tuned\)"):
        kernel_choices.gemm_mode()


def test_prefill_config_names_match_the_kernels():
    """fdoverlap_cli.ops mirrors attention.h's kPrefillTcNames, kDecodeTcNames and their environment variables
    (the GPU tests and benchmarks/kernels.py iterate over the Python lists)."""
    header = (REPO / "custom_ops" / "model" / "attention.h").read_text()
    names = re.search(r"kPrefillTcNames\[\] = \{([^}]*)\}", header).group(1)
    assert tuple(re.findall(r'"([^"]+)"', names)) == kernel_choices.PREFILL_TC_CONFIGS
    assert f'kPrefillTcEnv = "{kernel_choices.PREFILL_TC_ENV}"' in header
    assert f"kPrefillTcFirstWg = {kernel_choices.PREFILL_TC_FIRST_WG};" in header
    names = re.search(r"kDecodeTcNames\[\] = \{([^}]*)\}", header).group(1)
    assert tuple(re.findall(r'"([^"]+)"', names)) == kernel_choices.DECODE_TC_CONFIGS
    assert f'kDecodeTcEnv = "{kernel_choices.DECODE_TC_ENV}"' in header
