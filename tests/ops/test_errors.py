"""Wrong dtypes, shapes and places give an error that names the op and the input (never a crash)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.ops.tensors import cpu

I32, I64, F32, BOOL = np.int32, np.int64, np.float32, np.bool_


def z(shape, dtype):
    return cpu(np.zeros(shape, dtype))


CASES = [
    (
        "decoder_layer",
        lambda o: o.decoder_layer(
            z((2, 8), F32),
            z((2, 8), F32),
            z(8, F32),
            z((8, 12), F32),
            z((4, 8), F32),
            z(8, F32),
            z((8, 6), F32),
            z((3, 8), F32),
            z((2, 4, 1, 2), F32),
            z((2, 4, 1, 2), F32),
            z(2, I32),
            z(3, I32),
            z(2, I32),
            2,
            1,
            2,
            1e-5,
            0.5,
            False,
        ),
        r"decoder_layer: input 'qkv_weight' must have shape \[8, 8\]",
    ),
    ("get_stop", lambda o: o.get_stop(z(1, I32)), "get_stop: input 'flag' must be bool, got int32"),
    ("set_stop", lambda o: o.set_stop(z(2, BOOL), True), "set_stop: input 'flag' must have 1 elements, got 2"),
    (
        "get_padding_offset",
        lambda o: o.get_padding_offset(z((2, 3), I64), z(3, I32), 4),
        r"get_padding_offset: input 'seq_lens_this_time' must have shape \[2\]",
    ),
    (
        "get_padding_offset",
        lambda o: o.get_padding_offset(z((2, 3), I32), z(2, I32), 4),
        "get_padding_offset: input 'input_ids' must be int64, got int32",
    ),
    (
        "rebuild_padding",
        lambda o: o.rebuild_padding(z((3, 4), I64), z(3, I32), z(2, I32)),
        "rebuild_padding: input 'hidden' must be float32 or float16, got int64",
    ),
    (
        "set_value_by_flags_and_idx",
        lambda o: o.set_value_by_flags_and_idx(
            z((2, 6), I64), z((2, 4), I64), z(2, I32), z(2, I32), z(2, I32), z(2, I64), z(2, I32)
        ),
        "set_value_by_flags_and_idx: input 'stop_flags' must be bool, got int32",
    ),
    (
        "set_stop_value_multi_ends",
        lambda o: o.set_stop_value_multi_ends(
            z((2, 1), I64), z(2, BOOL), z(2, I32), z(2, I32), z(2, I64), z(2, I64), z(2, I64), z(0, I64), z((2, 1), I64)
        ),
        "set_stop_value_multi_ends: input 'end_ids' must hold at least one id",
    ),
    (
        "update_inputs",
        lambda o: o.update_inputs(
            z(2, BOOL),
            z(1, BOOL),
            z(2, I32),
            z(2, I32),
            z(2, I64),
            z(2, I64),
            z((2, 1), I64),
            z((2, 4), I64),
            z((2, 1), I64),
        ),
        "update_inputs: input 'seq_lens_decoder' must be int32, got int64",
    ),
    (
        "embedding",
        lambda o: o.embedding(z(3, I32), z((5, 2), F32)),
        "embedding: input 'ids' must be int64, got int32",
    ),
    (
        "fdo_rms_norm",
        lambda o: o.fdo_rms_norm(z((2, 4), F32), z(3, F32), 1e-6),
        r"fdo_rms_norm: input 'weight' must have shape \[4\]",
    ),
    (
        "add_rms_norm",
        lambda o: o.add_rms_norm(z((2, 4), F32), z((2, 4), np.float16), z(4, F32), 1e-6),
        "add_rms_norm: input 'residual' must have the dtype of 'x'",
    ),
    ("silu_mul", lambda o: o.silu_mul(z((2, 5), F32)), "silu_mul: input 'gate_up' must have an even number"),
    ("gemm", lambda o: o.gemm(z((2, 4), F32), z((3, 5), F32)), r"gemm: input 'w' must have shape \[4, -1\]"),
    ("gemm", lambda o: o.gemm(z((2, 4), I64), z((4, 5), I64)), "gemm: input 'x' must be float32 or float16"),
    ("gemm", lambda o: o.gemm(z((2, 4), F32), z((4, 5), np.float16)), "gemm: input 'w' must have the dtype of 'x'"),
    (
        "gemm_decode",
        lambda o: o.gemm_decode(z((2, 4), F32), z((3, 5), F32), False),
        r"gemm_decode: input 'w' must have shape \[4, -1\]",
    ),
    (
        "gemm_decode",
        lambda o: o.gemm_decode(z((2, 4), F32), z((4, 5), F32), True),
        r"gemm_decode: with glu, input 'w' must have an even number of columns \(gate \| up\), got 5",
    ),
    (
        "gemm_decode",
        lambda o: o.gemm_decode(z(4, F32), z((4, 6), F32), False),
        r"gemm_decode: input 'x' must have shape \[-1, -1\]",
    ),
    (
        "attention",
        lambda o: o.attention(
            z((1, 12), F32), z((1, 3, 1, 4), F32), z((1, 3, 1, 4), F32), z(1, I32), z(2, I32), z(1, I32), 2, 1, 4, 1.0
        ),
        r"attention: input 'qkv' must have shape \[-1, 16\]",
    ),
    (
        "write_kv_cache",
        lambda o: o.write_kv_cache(
            z((1, 12), F32), z((1, 3, 1, 4), F32), z((1, 3, 1, 4), F32), z(1, I32), z(2, I32), z(1, I32), 3, 2, 4
        ),
        r"write_kv_cache: num_q_heads \(3\) must be a multiple of num_kv_heads \(2\)",
    ),
    (
        "sample_greedy",
        lambda o: o.sample_greedy(z(4, F32), -1),
        r"sample_greedy: input 'logits' must have shape \[-1, -1\]",
    ),
    (
        "fill_",
        lambda o: o.fill_(z(3, np.uint8), 1.0),
        "fill_: input 'x' must be bool, int32, int64, float16 or float32",
    ),
    ("fill_random_", lambda o: o.fill_random_(z(3, I64), 1, 1.0), "fill_random_: input 'x' must be float32 or float16"),
    (
        "fill_random_block_",
        lambda o: o.fill_random_block_(z(3, F32), 1, 1.0, 3, 0, 0, 0, 3),
        r"fill_random_block_: input 'x' must be 2-D \[rows, cols\]",
    ),
    (
        "fill_random_block_",
        lambda o: o.fill_random_block_(z((2, 3), I64), 1, 1.0, 3, 0, 0, 0, 3),
        "fill_random_block_: input 'x' must be float32 or float16",
    ),
    (
        "fill_random_block_",
        lambda o: o.fill_random_block_(z((2, 3), F32), 1, 1.0, 4, 0, 2, 0, 3),
        r"fill_random_block_: columns \[2, 5\) are past full_cols 4",
    ),
    ("record_timestamp", lambda o: o.record_timestamp(z(3, I32), 0, 0), "record_timestamp: input 'buf' must be int64"),
    ("clock_samples", lambda o: o.clock_samples(z(1, I64), 0), "clock_samples: attribute 'samples' must be positive"),
    (
        "save_output",
        lambda o: o.save_output(z((2, 1), I64), z(1, BOOL), z(3, I32), 0, 1),
        r"save_output: input 'preempted_idx' must have shape \[2\]",
    ),
    (
        "save_output",
        lambda o: o.save_output(z((2, 1), I64), z(1, BOOL), z(2, I32), 0, 0),
        "save_output: attribute 'msg_id' must be positive",
    ),
    (
        "save_output",
        lambda o: o.save_output(z((2, 1), I64), z(1, BOOL), z(2, I32), 0, 2),
        "save_output: attribute 'msg_id' must not be 2 .a leading -2 means 'no message'",
    ),
    ("get_output", lambda o: o.get_output(z(8, I64), 0, False), "get_output: input 'out' must be int32, got int64"),
]


@pytest.mark.parametrize(("op", "call", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_names_the_op_and_the_input(ops, op, call, message):
    with pytest.raises(OSError, match=message):
        call(ops)


def test_every_op_has_an_error_case():
    from fdoverlap_cli.ops import CPU_SOURCE, source_dir

    registered = set()
    for path in source_dir().rglob("*.cc"):
        if path.name != CPU_SOURCE:
            registered |= set(re.findall(r"PD_BUILD_OP\((\w+)\)", path.read_text()))
    missing = registered - {case[0] for case in CASES} - {"insert_tasks"}  # insert_tasks: test_step_ops.py
    assert not missing
