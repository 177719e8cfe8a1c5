// Which prefill tile a block of the tensor-core attention kernel owns, and which rows the stray pass skips.
#pragma once

#include <climits>

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

}  // namespace fdo::attention
