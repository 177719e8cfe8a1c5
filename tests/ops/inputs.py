"""Random inputs shared by the CPU tests of the ops and the GPU-against-CPU tests."""

from __future__ import annotations

import numpy as np


def random_step_state(rng: np.random.Generator, bsz: int, width: int) -> dict[str, np.ndarray]:
    """Slot buffers in random states; each op's rule is per slot, so any combination is a valid input."""
    return {
        "input_ids": rng.integers(0, 50, (bsz, width)).astype(np.int64),
        "seq_lens_this_time": rng.integers(0, width + 1, bsz).astype(np.int32),
        "seq_lens_encoder": rng.integers(0, width + 1, bsz).astype(np.int32),
        "seq_lens_decoder": rng.integers(0, 3 * width, bsz).astype(np.int32),
        "prompt_lens": rng.integers(1, 4 * width, bsz).astype(np.int64),
        "step_idx": rng.integers(0, 8, bsz).astype(np.int64),
        "max_dec_len": rng.integers(1, 10, bsz).astype(np.int64),
        "stop_flags": rng.random(bsz) < 0.3,
        # A small vocabulary so that sampled tokens hit the end ids often.
        "sampled_token_ids": rng.integers(0, 6, (bsz, 1)).astype(np.int64),
        "next_tokens": rng.integers(0, 50, (bsz, 1)).astype(np.int64),
        "pre_ids": rng.integers(-1, 50, (bsz, 2 * width + 2)).astype(np.int64),
    }


def random_tasks(rng: np.random.Generator, bsz: int, width: int):
    """(task_meta, task_tokens, preempt_slots): distinct slots, lengths that fit input_ids."""
    n = int(rng.integers(0, bsz + 1))
    slots = rng.permutation(bsz)[:n]
    lens = rng.integers(0, width + 1, n)
    start, prefill_len = rng.integers(0, 30, n), lens + rng.integers(0, 30, n)
    step_idx, max_dec_len = rng.integers(0, 5, n), rng.integers(1, 64, n)
    meta = np.column_stack([slots, start, lens, prefill_len, step_idx, max_dec_len]).astype(np.int64).reshape(n, 6)
    tokens = rng.integers(0, 1000, int(lens.sum())).astype(np.int64)
    preempt = rng.choice(bsz, int(rng.integers(0, bsz + 1)), replace=False).astype(np.int32) if bsz else []
    return meta, tokens, np.asarray(preempt, np.int32)


def random_attention_batch(rng: np.random.Generator, dtype, hq: int, hkv: int, d: int, bsz: int = 4, max_len: int = 12):
    """A packed batch of prefill chunks and decode rows over a random cache, plus trailing padding rows."""
    dec = rng.integers(0, max_len // 2, bsz).astype(np.int32)
    lens = np.array([rng.integers(0, max_len - dec[b] + 1) for b in range(bsz)], np.int32)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    padding = int(rng.integers(0, 3))
    batch = np.concatenate([np.repeat(np.arange(bsz), lens), np.full(padding, -1)]).astype(np.int32)
    qkv = rng.standard_normal((len(batch), (hq + 2 * hkv) * d)).astype(dtype)
    caches = [rng.standard_normal((bsz, max_len, hkv, d)).astype(dtype) for _ in range(2)]
    return qkv, caches[0], caches[1], batch, cu, dec


def packed_attention_batch(
    rng: np.random.Generator,
    dtype,
    hq: int,
    hkv: int,
    d: int,
    lens,
    dec,
    max_len: int,
    padding: int = 0,
    poison_tail: bool = False,
):
    """A batch packed as get_padding_offset packs it: slot b has lens[b] rows from cache position dec[b],
    then `padding` rows of batch id -1. With poison_tail, every cache position past a slot's last row
    is NaN, so a kernel that reads beyond a row's prefix shows it."""
    lens = np.asarray(lens, np.int32)
    dec = np.asarray(dec, np.int32)
    bsz = len(lens)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    batch = np.concatenate([np.repeat(np.arange(bsz), lens), np.full(padding, -1)]).astype(np.int32)
    qkv = rng.standard_normal((len(batch), (hq + 2 * hkv) * d), dtype=np.float32).astype(dtype)
    caches = [rng.standard_normal((bsz, max_len, hkv, d), dtype=np.float32).astype(dtype) for _ in range(2)]
    if poison_tail:
        for cache in caches:
            for b in range(bsz):
                cache[b, dec[b] + lens[b] :] = np.nan
    return qkv, caches[0], caches[1], batch, cu, dec


# (K, N) of an 8B-class layer's GEMMs: qkv, o, gate_up, down.
DECODE_GEMMS = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)]


def gemm_inputs(rng, m: int, k: int, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """x in [-1, 1), w in [-1, 1) / sqrt(K): outputs of order one, so that algorithms whose float32 sums differ
    round to the same or the adjacent float16."""
    return rng.uniform(-1, 1, (m, k)).astype(dtype), (rng.uniform(-1, 1, (k, n)) / np.sqrt(k)).astype(dtype)
