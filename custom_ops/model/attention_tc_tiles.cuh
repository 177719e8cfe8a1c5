// Which prefill tile a block of the tensor-core attention kernel owns, and which rows the stray pass skips.
#pragma once

#include <climits>

#include "../include/tensor_core.cuh"
#include "attention_common.cuh"

namespace fdo::attention {

// Warp 0: the tile of block `x` among the tiles of every slot (ceil(rows of b / rows_per_tile) each,
// a slot's last tile first, so the longest causal tiles start early). Slot b owns rows
// [E_b, E_{b+1}) with E_b = max(cu[0..b]) clamped to [0, rows) (for a prefix sum: [cu[b], cu[b+1])).
// Writes {b, first row, end row} to info; b = -1 when x is past the last tile.
__device__ __forceinline__ void FindTile(const AttentionArgs<half_bits>& a, int rows_per_tile, int x, int* info) {
  const int lane = threadIdx.x & 31;
  const int rows = static_cast<int>(a.shape.rows);
  const int bsz = static_cast<int>(a.shape.bsz);
  int carry = 0;  // E of the first slot of this chunk
  int base = 0;   // tiles before this chunk
  for (int b0 = 0; b0 < bsz; b0 += 32) {
    const int b = b0 + lane;
    int start = b < bsz ? a.cu[b] : INT_MIN;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int up = __shfl_up_sync(0xFFFFFFFFu, start, offset);
      if (lane >= offset) start = max(start, up);
    }
    start = max(start, carry);
    const int end = b < bsz ? max(start, a.cu[b + 1]) : start;
    const int lo = min(max(start, 0), rows);
    const int hi = min(max(end, 0), rows);
    const int tiles = (hi - lo + rows_per_tile - 1) / rows_per_tile;
    int inclusive = tiles;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int up = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
      if (lane >= offset) inclusive += up;
    }
    const int exclusive = inclusive - tiles;
    const unsigned owner = __ballot_sync(0xFFFFFFFFu, x >= base + exclusive && x < base + inclusive);
    if (owner != 0) {
      if (lane == __ffs(owner) - 1) {
        const int tile = tiles - 1 - (x - base - exclusive);
        info[0] = b;
        info[1] = lo + tile * rows_per_tile;
        info[2] = min(lo + (tile + 1) * rows_per_tile, hi);
      }
      return;
    }
    base += __shfl_sync(0xFFFFFFFFu, inclusive, 31);
    carry = __shfl_sync(0xFFFFFFFFu, end, 31);
  }
  if (lane == 0) info[0] = -1;
}

// Warp-wide: true when a prefill tile owns row t (see FindTile), so the stray pass leaves it alone.
__device__ __forceinline__ bool OwnedByTile(const AttentionArgs<half_bits>& a, int64_t t) {
  const AttentionShape& s = a.shape;
  if (s.Position(t, a.batch, a.cu, a.dec) < 0) return false;
  const int b = a.batch[t];
  if (t >= a.cu[b + 1]) return false;
  int start = INT_MIN;
  for (int i = threadIdx.x & 31; i <= b; i += 32) start = max(start, a.cu[i]);
  for (int offset = 16; offset > 0; offset >>= 1) start = max(start, __shfl_xor_sync(0xFFFFFFFFu, start, offset));
  return t >= start;
}

// One thread's OwnedByTile, for blocks that check a row a thread.
__device__ __forceinline__ bool OwnedByTileThread(const AttentionArgs<half_bits>& a, int64_t t) {
  if (a.shape.Position(t, a.batch, a.cu, a.dec) < 0) return false;
  const int b = a.batch[t];
  if (t >= a.cu[b + 1]) return false;
  int start = INT_MIN;
  for (int i = 0; i <= b; ++i) start = max(start, a.cu[i]);
  return t >= start;
}

// The q heads of one block: KV head kv_head's q heads first_head .. first_head + heads - 1, hp MMA rows a
// token row (blocks split a KV head's group into head_chunks chunks of heads_per_tile).
struct HeadBlock {
  int kv_head;
  int hp;
  int heads;
  int first_head;
};

__device__ __forceinline__ HeadBlock HeadBlockOf(const AttentionArgs<half_bits>& a, int head_block) {
  const int kv_head = head_block / a.head_chunks;
  const int first_in_group = (head_block % a.head_chunks) * a.heads_per_tile;
  return {kv_head, a.heads_per_tile, min(a.heads_per_tile, a.Group() - first_in_group),
          kv_head * a.Group() + first_in_group};
}

// Queues the copies of the block's q vectors: MMA row m is (token row row_begin + m / hp, q head
// first_head + m % hp), its 16-byte chunk c goes to sQ + offset(m, c); rows and dims past the block's are
// zeros (the token row exists whatever its position, so it is read at once).
template <int kBM, int kChunks, int kThreads, class Offset>
__device__ __forceinline__ void LoadTileQ(const AttentionArgs<half_bits>& a, const HeadBlock& hb, int64_t row_begin,
                                          int64_t row_end, uint16_t* sQ, Offset offset) {
  const AttentionShape& s = a.shape;
  for (int i = threadIdx.x; i < kBM * kChunks; i += kThreads) {
    const int m = i / kChunks;
    const int c = i - m * kChunks;
    const int r = m / hb.hp;
    const int hh = m - r * hb.hp;
    const bool ok = hh < hb.heads && row_begin + r < row_end && c * 8 < s.head_dim;
    const uint16_t* src =
        ok ? a.qkv + (row_begin + r) * s.QkvWidth() + static_cast<int64_t>(hb.first_head + hh) * s.head_dim + c * 8
           : a.qkv;
    tc::CopyAsync16(sQ + offset(m, c), src, ok ? 16 : 0);
  }
}

// mma_pos[m]: the cache position of MMA row m's token row, -1 for an unused MMA row (or, with slot >= 0, a
// row of another slot); their maximum goes to *max_pos (set to -1 before).
template <int kBM, int kThreads>
__device__ __forceinline__ void TilePositions(const AttentionArgs<half_bits>& a, const HeadBlock& hb, int64_t row_begin,
                                              int64_t row_end, int slot, int* mma_pos, int* max_pos) {
  for (int m = threadIdx.x; m < kBM; m += kThreads) {
    const int r = m / hb.hp;
    const int64_t t = row_begin + r;
    int p = -1;
    if (m - r * hb.hp < hb.heads && t < row_end && (slot < 0 || a.batch[t] == slot)) {
      p = static_cast<int>(a.shape.Position(t, a.batch, a.cu, a.dec));
    }
    mma_pos[m] = p;
    if (p >= 0) atomicMax(max_pos, p);
  }
}

}  // namespace fdo::attention
