"""NumPy reference implementations of the op library, written from the contract in docs/architecture.md.

Each function takes and returns NumPy arrays; in-place ops return the updated copies of the buffers
they change. Float kernels compute in float32 like the ops; float16 results round to nearest even.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
PREEMPTED_TOKEN = -9
PADDING_TOKEN_ID = 2


def get_padding_offset(input_ids: np.ndarray, seq_lens_this_time: np.ndarray, token_num: int):
    """(ids_remove_padding, batch_id_per_token, cu_seqlens_q, cu_seqlens_k)."""
    bsz, width = input_ids.shape
    lens = np.clip(seq_lens_this_time.astype(np.int64), 0, width)
    cu = np.zeros(bsz + 1, np.int32)
    cu[1:] = np.cumsum(lens)
    ids = np.full(token_num, PADDING_TOKEN_ID, np.int64)
    batch = np.full(token_num, -1, np.int32)
    packed_ids = np.concatenate([input_ids[b, : lens[b]] for b in range(bsz)] + [np.zeros(0, np.int64)])
    packed_batch = np.repeat(np.arange(bsz, dtype=np.int32), lens)
    n = min(token_num, len(packed_ids))
    ids[:n] = packed_ids[:n]
    batch[:n] = packed_batch[:n]
    return ids, batch, cu, cu.copy()


def rebuild_padding(hidden: np.ndarray, cu_seqlens_q: np.ndarray, seq_lens_this_time: np.ndarray) -> np.ndarray:
    bsz = len(seq_lens_this_time)
    out = np.zeros((bsz, hidden.shape[1]), hidden.dtype)
    for b in range(bsz):
        row = int(cu_seqlens_q[b + 1]) - 1
        if seq_lens_this_time[b] > 0 and 0 <= row < hidden.shape[0]:
            out[b] = hidden[row]
    return out


def set_value_by_flags_and_idx(pre_ids_all, input_ids, this_time, enc, dec, step_idx, stop_flags) -> np.ndarray:
    """`this_time` is not read (FastDeploy's kernel takes it and ignores it)."""
    pre_ids_all = pre_ids_all.copy()
    width = input_ids.shape[1]
    for b in range(pre_ids_all.shape[0]):
        if stop_flags[b] or (enc[b] == 0 and dec[b] == 0):
            continue
        if not 0 < step_idx[b] < pre_ids_all.shape[1] or width == 0:
            continue
        col = min(int(enc[b]), width) - 1 if enc[b] > 0 else 0
        pre_ids_all[b, step_idx[b]] = input_ids[b, col]
    return pre_ids_all


def set_stop_value_multi_ends(tokens, stop, this_time, dec, prompt_lens, step_idx, max_dec_len, end_ids, next_tokens):
    """(sampled_token_ids, stop_flags, step_idx, next_tokens)."""
    tokens, stop, step_idx, next_tokens = tokens.copy(), stop.copy(), step_idx.copy(), next_tokens.copy()
    for b in range(len(stop)):
        prefilling = this_time[b] > 0 and int(dec[b]) + int(this_time[b]) < prompt_lens[b]
        if not stop[b] and not prefilling:
            step_idx[b] += 1
            stop[b] = stop[b] or step_idx[b] >= max_dec_len[b]
        if stop[b]:
            if this_time[b] == 0:
                tokens[b, 0] = -1
            else:
                tokens[b, 0] = next_tokens[b, 0] = end_ids[0]
        else:
            next_tokens[b, 0] = tokens[b, 0]
        if not prefilling and tokens[b, 0] in end_ids:
            stop[b] = True
            tokens[b, 0] = next_tokens[b, 0] = end_ids[0]
    return tokens, stop, step_idx, next_tokens


def update_inputs(stop, this_time, enc, dec, prompt_lens, tokens, input_ids, next_tokens):
    """(stop_flags, not_need_stop, seq_lens_this_time, seq_lens_encoder, seq_lens_decoder, sampled_token_ids,
    input_ids)."""
    stop, this_time, enc, dec = stop.copy(), this_time.copy(), enc.copy(), dec.copy()
    tokens, input_ids = tokens.copy(), input_ids.copy()
    for b in range(len(stop)):
        prompt_done = int(this_time[b]) + int(dec[b]) >= prompt_lens[b]
        if stop[b]:
            if not prompt_done:
                tokens[b, 0] = -1
            this_time[b] = enc[b] = dec[b] = 0
        elif prompt_done:
            dec[b] += this_time[b]
            this_time[b] = 1
            enc[b] = 0
            if input_ids.shape[1]:
                input_ids[b, 0] = next_tokens[b, 0]
        else:
            stop[b] = True
            this_time[b] = enc[b] = dec[b] = 0
            tokens[b, 0] = -1
    not_need_stop = np.array([int(stop.sum()) < len(stop)])
    return stop, not_need_stop, this_time, enc, dec, tokens, input_ids


def insert_tasks(buffers: dict[str, np.ndarray], task_meta, task_tokens, preempt_slots) -> dict[str, np.ndarray]:
    """`buffers`: input_ids, pre_ids, seq_lens_this_time, seq_lens_encoder, seq_lens_decoder, prompt_lens, step_idx,
    max_dec_len, stop_flags. Returns updated copies."""
    out = {name: value.copy() for name, value in buffers.items()}
    for slot in preempt_slots:
        out["stop_flags"][slot] = True
        out["seq_lens_this_time"][slot] = out["seq_lens_encoder"][slot] = out["seq_lens_decoder"][slot] = 0
    offset = 0
    for slot, start, length, prefill_len, step, max_dec in task_meta:
        out["input_ids"][slot, :length] = task_tokens[offset : offset + length]
        out["pre_ids"][slot] = -1
        offset += length
        out["seq_lens_this_time"][slot] = out["seq_lens_encoder"][slot] = length
        out["seq_lens_decoder"][slot] = start
        out["prompt_lens"][slot] = prefill_len
        out["step_idx"][slot] = step
        out["max_dec_len"][slot] = max_dec
        out["stop_flags"][slot] = False
    return out


# ---------------------------------------------------------------------------------------------- model


def embedding(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    valid = (ids >= 0) & (ids < table.shape[0])
    out = np.zeros((len(ids), table.shape[1]), table.dtype)
    out[valid] = table[ids[valid]]
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x32 = x.astype(np.float32)
    inv = np.float32(1.0) / np.sqrt((x32 * x32).sum(-1, keepdims=True) / np.float32(x.shape[1]) + np.float32(eps))
    return (x32 * inv * weight.astype(np.float32)).astype(x.dtype)


def add_rms_norm(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, eps: float):
    residual_out = (x.astype(np.float32) + residual.astype(np.float32)).astype(x.dtype)
    return rms_norm(residual_out, weight, eps), residual_out


def silu_mul(gate_up: np.ndarray) -> np.ndarray:
    half = gate_up.shape[1] // 2
    g = gate_up[:, :half].astype(np.float32)
    u = gate_up[:, half:].astype(np.float32)
    return (g / (np.float32(1.0) + np.exp(-g)) * u).astype(gate_up.dtype)


def _positions(batch_id_per_token, cu_seqlens_q, seq_lens_decoder, max_model_len) -> np.ndarray:
    """Each row's cache position, -1 for padding rows and positions outside the cache."""
    pos = np.full(len(batch_id_per_token), -1, np.int64)
    for t, b in enumerate(batch_id_per_token):
        if 0 <= b < len(seq_lens_decoder):
            p = int(seq_lens_decoder[b]) + t - int(cu_seqlens_q[b])
            pos[t] = p if 0 <= p < max_model_len else -1
    return pos


def write_kv_cache(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q, seq_lens_decoder, hq, hkv, d):
    key_cache, value_cache = key_cache.copy(), value_cache.copy()
    pos = _positions(batch_id_per_token, cu_seqlens_q, seq_lens_decoder, key_cache.shape[1])
    for t, p in enumerate(pos):
        if p < 0:
            continue
        b = batch_id_per_token[t]
        key_cache[b, p] = qkv[t, hq * d : (hq + hkv) * d].reshape(hkv, d)
        value_cache[b, p] = qkv[t, (hq + hkv) * d :].reshape(hkv, d)
    return key_cache, value_cache


def attention(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q, seq_lens_decoder, hq, hkv, d, scale):
    pos = _positions(batch_id_per_token, cu_seqlens_q, seq_lens_decoder, key_cache.shape[1])
    out = np.zeros((qkv.shape[0], hq * d), np.float32)
    group = hq // hkv
    for t, p in enumerate(pos):
        if p < 0:
            continue
        b = batch_id_per_token[t]
        for h in range(hq):
            q = qkv[t, h * d : (h + 1) * d].astype(np.float32)
            keys = key_cache[b, : p + 1, h // group].astype(np.float32)
            values = value_cache[b, : p + 1, h // group].astype(np.float32)
            scores = keys @ q * np.float32(scale)
            weights = np.exp(scores - scores.max())
            out[t, h * d : (h + 1) * d] = weights @ values / weights.sum()
    return out.astype(qkv.dtype)


def sample_greedy(logits: np.ndarray, banned_token_id: int) -> np.ndarray:
    """Argmax, ties to the lowest id, banned id never, NaN below every number; -1 with no candidate."""
    out = np.full((logits.shape[0], 1), -1, np.int64)
    for b, row in enumerate(logits.astype(np.float32)):
        candidates = [v for v in range(len(row)) if v != banned_token_id]
        if not candidates:
            continue
        numbers = [v for v in candidates if not np.isnan(row[v])]
        if not numbers:
            out[b, 0] = candidates[0]
            continue
        best = max(row[v] for v in numbers)
        out[b, 0] = min(v for v in numbers if row[v] == best)
    return out


def fill_random(shape, dtype, seed: int, scale: float) -> np.ndarray:
    """scale * u(seed, i): splitmix64 of seed + i * golden, top 24 bits mapped to [-1, 1), float32 math."""
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = ((z >> np.uint64(40)).astype(np.int64) - 2**23).astype(np.float32) * np.float32(2.0**-23)
    return (np.float32(scale) * u).astype(dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------- output IPC


def output_message(tokens: np.ndarray, not_need_stop: bool, preempted: np.ndarray, msg_id: int) -> np.ndarray:
    """save_output's int32 message: [±msg_id, bsz, token_0 .. token_{bsz-1}], -9 where preempted is exactly 1."""
    body = np.where(preempted == 1, PREEMPTED_TOKEN, tokens.reshape(-1)).astype(np.int32)
    head = np.array([msg_id if not_need_stop else -msg_id, len(body)], np.int32)
    return np.concatenate([head, body])
