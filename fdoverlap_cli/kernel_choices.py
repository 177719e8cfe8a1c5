"""The kernel choices the op library reads from the environment, as custom_ops names them (tests/ops check
the names agree), and what this process runs: one place for the C++ side's FDOVERLAP_* variables.
"""

from __future__ import annotations

import os

from fdoverlap_cli.errors import FdoError

# The tensor-core attention's prefill tile configurations, as custom_ops/model/attention.h names them
# (kPrefillTcNames; tests/ops checks the two agree), and the environment variable that picks one per call.
PREFILL_TC_ENV = "FDOVERLAP_PREFILL_TC"
PREFILL_TC_CONFIGS = ("w4m2n64", "w4m2n32q", "w8m1n64", "w8m2n64", "w4m2n64s3", "wg3n128", "wg3n64", "wg2n128")
# Those from here on are the warpgroup-MMA kernels, built for Hopper (sm_90a) only.
PREFILL_TC_FIRST_WG = 5
# Its decode configurations likewise (kDecodeTcNames): "rows" is the one-warp blocks with splits merged by a
# second kernel, the others split each row's keys among a block's warps.
DECODE_TC_ENV = "FDOVERLAP_DECODE_TC"
DECODE_TC_CONFIGS = ("rows", "w4n32", "w8n16")
# What the model's GEMMs run on a GPU, as custom_ops/model/gemm.h names the choices (kGemmModes; tests/ops
# checks the two agree): the op library's decode GEMM (gemm_decode: its own kernel for the shapes its plan
# takes, paddle.matmul for the rest), paddle.matmul, or its tuned cuBLASLt op. Unset or empty: the first.
GEMM_ENV = "FDOVERLAP_GEMM"
GEMM_MODES = ("decode", "paddle", "tuned")


def current() -> dict[str, str]:
    """The op library's kernel choices this process runs, by variable ("" where unset: the library's default),
    with FDOVERLAP_GEMM resolved to its choice: what run.json records of them."""
    return {
        GEMM_ENV: gemm_mode(),
        DECODE_TC_ENV: os.environ.get(DECODE_TC_ENV, ""),
        PREFILL_TC_ENV: os.environ.get(PREFILL_TC_ENV, ""),
    }


def gemm_mode() -> str:
    """The GEMM choice FDOVERLAP_GEMM names (the default when unset or empty); an unknown one is an error."""
    value = os.environ.get(GEMM_ENV) or GEMM_MODES[0]
    if value not in GEMM_MODES:
        raise FdoError(f"{GEMM_ENV}={value} is not a GEMM choice ({', '.join(GEMM_MODES)})")
    return value
