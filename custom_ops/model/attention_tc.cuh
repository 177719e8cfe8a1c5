// The float16 tensor-core attention kernel (FlashAttention-2 style, mma.sync m16n8k16, float32
// accumulators and softmax). A block computes one tile of "slots", each slot a (row, q head) pair of one
// slot's rows and the q heads of one KV head, so the q heads sharing a KV head read it once. Each warp
// owns 16 slots; the block streams its keys and values through shared memory in tiles of BN keys
// with cp.async (STAGES buffers deep), S = Q K^T and O += P V on tensor cores, an online softmax in
// between. Two uses of the same kernel:
//   kTiles = false: one row per block (decode rows), its keys split `splits` ways (flash-decoding);
//   kTiles = true:  BM / heads rows of one slot per block (prefill chunks), causal over each row's prefix.
#pragma once

#include "../include/tensor_core.cuh"
#include "attention_common.cuh"

namespace fdo::attention {

template <int DP, int WARPS, int BN, int STAGES>
struct TcTile {
  static constexpr int kBM = 16 * WARPS;  // slots per block
  static constexpr int kLd = DP + 8;      // float16 per shared row: the pad keeps ldmatrix free of bank conflicts
  static constexpr int kChunks = DP / 8;  // 16-byte chunks per row
  static constexpr int kThreads = 32 * WARPS;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 2 * STAGES * BN) * kLd * sizeof(uint16_t);
};

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

template <int DP, int WARPS, int BN, int STAGES, bool kTiles>
__global__ void __launch_bounds__(WARPS * 32) TcAttentionKernel(AttentionArgs<half_bits> a) {
  using T = TcTile<DP, WARPS, BN, STAGES>;
  constexpr int kBM = T::kBM;
  constexpr int kLd = T::kLd;
  constexpr int kChunks = T::kChunks;
  constexpr int kThreads = T::kThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sK = sQ + kBM * kLd;
  uint16_t* sV = sK + STAGES * BN * kLd;
  __shared__ int64_t slot_row[kBM];
  __shared__ int slot_head[kBM];
  __shared__ int slot_pos[kBM];  // the row's cache position; -1: an unused slot
  __shared__ int tile[3];
  __shared__ int max_pos;

  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int kv_head = blockIdx.y / a.head_chunks;
  const int hp = a.heads_per_tile;
  const int first_in_group = (blockIdx.y % a.head_chunks) * hp;
  const int chunk_heads = min(hp, a.Group() - first_in_group);
  const int first_head = kv_head * a.Group() + first_in_group;

  int64_t row_begin, row_end;
  int b = -1;
  if constexpr (kTiles) {
    if (warp == 0) FindTile(a, kBM / hp, blockIdx.x, tile);
    __syncthreads();
    b = tile[0];
    if (b < 0) return;
    row_begin = tile[1];
    row_end = tile[2];
  } else {
    row_begin = blockIdx.x;
    row_end = row_begin + 1;
    if (a.strays_only) {
      static_assert(kTiles || WARPS == 1, "the stray check runs on the block's only warp");
      if (OwnedByTile(a, row_begin)) return;
    }
  }
  if (tid == 0) max_pos = -1;
  __syncthreads();
  for (int m = tid; m < kBM; m += kThreads) {
    const int r = m / hp;
    const int hh = m - r * hp;
    const int64_t t = row_begin + r;
    int p = -1;
    if (hh < chunk_heads && t < row_end && (!kTiles || a.batch[t] == b)) {
      p = static_cast<int>(s.Position(t, a.batch, a.cu, a.dec));
    }
    slot_row[m] = t;
    slot_head[m] = first_head + hh;
    slot_pos[m] = p;
    if (p >= 0) atomicMax(&max_pos, p);
  }
  __syncthreads();
  const int pmax = max_pos;
  if (pmax < 0) {  // row tiles: a padding row or a row outside the cache; tiles: nothing to do
    if (!kTiles && a.splits == 1) {
      for (int i = tid; i < chunk_heads * D; i += kThreads) a.out[row_begin * s.QWidth() + first_head * D + i] = 0;
    }
    return;
  }
  if constexpr (!kTiles) b = a.batch[row_begin];
  const KeyRange range = kTiles ? KeyRange{0, pmax + 1} : SplitRange(pmax + 1, blockIdx.z, a.splits);
  if (range.begin >= range.end) {
    for (int m = tid; m < kBM; m += kThreads) {
      if (slot_pos[m] >= 0) a.WriteEmptyPartial(slot_row[m], slot_head[m], blockIdx.z);
    }
    return;
  }
  const int tiles = static_cast<int>((range.end - range.begin + BN - 1) / BN);
  const uint16_t* keys = a.key_cache + s.CacheOffset(b, 0, kv_head);
  const uint16_t* values = a.value_cache + s.CacheOffset(b, 0, kv_head);
  const int64_t stride = s.KvWidth();

  for (int i = tid; i < kBM * kChunks; i += kThreads) {
    const int m = i / kChunks;
    const int c = i - m * kChunks;
    const bool ok = slot_pos[m] >= 0 && c * 8 < D;
    const uint16_t* src = ok ? a.qkv + slot_row[m] * s.QkvWidth() + static_cast<int64_t>(slot_head[m]) * D + c * 8 : a.qkv;
    tc::CopyAsync16(sQ + m * kLd + c * 8, src, ok ? 16 : 0);
  }
  tc::CommitCopies();
  auto load_tile = [&](int n, int stage) {
    const int64_t j0 = range.begin + static_cast<int64_t>(n) * BN;
    for (int i = tid; i < BN * kChunks; i += kThreads) {
      const int key = i / kChunks;
      const int c = i - key * kChunks;
      const int64_t j = j0 + key;
      const bool ok = j < range.end && c * 8 < D;
      const int64_t offset = ok ? j * stride + c * 8 : 0;
      const int at = (stage * BN + key) * kLd + c * 8;
      tc::CopyAsync16(sK + at, keys + offset, ok ? 16 : 0);
      tc::CopyAsync16(sV + at, values + offset, ok ? 16 : 0);
    }
  };
#pragma unroll
  for (int n = 0; n < STAGES - 1; ++n) {
    if (n < tiles) load_tile(n, n);
    tc::CommitCopies();
  }

  // This thread's two slots (rows g and g + 8 of the warp's 16), and the warp's last position.
  const int slot_lo = warp * 16 + (lane >> 2);
  const int pos_lo = slot_pos[slot_lo];
  const int pos_hi = slot_pos[slot_lo + 8];
  int warp_max_pos = max(pos_lo, pos_hi);
  for (int offset = 16; offset > 0; offset >>= 1) {
    warp_max_pos = max(warp_max_pos, __shfl_xor_sync(0xFFFFFFFFu, warp_max_pos, offset));
  }

  float o[DP / 8][4];
#pragma unroll
  for (int n = 0; n < DP / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float max_lo = -CUDART_INF_F, max_hi = -CUDART_INF_F, sum_lo = 0.0f, sum_hi = 0.0f;
  uint32_t qf[DP / 16][4];

  tc::WaitCopies<STAGES - 2>();
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk) {
    tc::LoadMatrixX4(qf[kk], sQ + (warp * 16 + (lane & 15)) * kLd + kk * 16 + (lane >> 4) * 8);
  }

  for (int n = 0; n < tiles; ++n) {
    if (n + STAGES - 1 < tiles) load_tile(n + STAGES - 1, (n + STAGES - 1) % STAGES);
    tc::CommitCopies();
    const int64_t j0 = range.begin + static_cast<int64_t>(n) * BN;
    if (warp_max_pos >= j0) {  // else every key of the tile is past this warp's rows
      const uint16_t* k_tile = sK + (n % STAGES) * BN * kLd;
      const uint16_t* v_tile = sV + (n % STAGES) * BN * kLd;
      float sc[BN / 8][4];
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        if (kk * 16 >= D) break;
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          uint32_t kb[4];
          tc::LoadMatrixX4(kb, k_tile + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * kLd + kk * 16 + ((lane >> 3) & 1) * 8);
          tc::Mma16816(sc[2 * np], qf[kk], kb[0], kb[1]);
          tc::Mma16816(sc[2 * np + 1], qf[kk], kb[2], kb[3]);
        }
      }
      float tile_lo = -CUDART_INF_F, tile_hi = -CUDART_INF_F;
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t j = j0 + i * 8 + (lane & 3) * 2 + e;
          sc[i][e] = j <= pos_lo ? sc[i][e] * a.scale_log2 : -CUDART_INF_F;
          sc[i][2 + e] = j <= pos_hi ? sc[i][2 + e] * a.scale_log2 : -CUDART_INF_F;
          tile_lo = fmaxf(tile_lo, sc[i][e]);
          tile_hi = fmaxf(tile_hi, sc[i][2 + e]);
        }
      }
#pragma unroll
      for (int offset = 1; offset < 4; offset <<= 1) {
        tile_lo = fmaxf(tile_lo, __shfl_xor_sync(0xFFFFFFFFu, tile_lo, offset));
        tile_hi = fmaxf(tile_hi, __shfl_xor_sync(0xFFFFFFFFu, tile_hi, offset));
      }
      const float new_lo = fmaxf(max_lo, tile_lo);
      const float new_hi = fmaxf(max_hi, tile_hi);
      const float base_lo = new_lo == -CUDART_INF_F ? 0.0f : new_lo;  // a row with no key yet stays empty
      const float base_hi = new_hi == -CUDART_INF_F ? 0.0f : new_hi;
      const float corr_lo = exp2f(max_lo - base_lo);
      const float corr_hi = exp2f(max_hi - base_hi);
      max_lo = new_lo;
      max_hi = new_hi;
      sum_lo *= corr_lo;
      sum_hi *= corr_hi;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        o[i][0] *= corr_lo;
        o[i][1] *= corr_lo;
        o[i][2] *= corr_hi;
        o[i][3] *= corr_hi;
      }
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        sc[i][0] = exp2f(sc[i][0] - base_lo);
        sc[i][1] = exp2f(sc[i][1] - base_lo);
        sc[i][2] = exp2f(sc[i][2] - base_hi);
        sc[i][3] = exp2f(sc[i][3] - base_hi);
        sum_lo += sc[i][0] + sc[i][1];
        sum_hi += sc[i][2] + sc[i][3];
      }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const uint32_t pa[4] = {tc::PackHalf2(sc[2 * kk][0], sc[2 * kk][1]), tc::PackHalf2(sc[2 * kk][2], sc[2 * kk][3]),
                                tc::PackHalf2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                                tc::PackHalf2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < DP / 16; ++dp) {
          if (dp * 16 >= D) break;
          uint32_t vb[4];
          tc::LoadMatrixX4Trans(vb, v_tile + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + dp * 16 + (lane >> 4) * 8);
          tc::Mma16816(o[2 * dp], pa, vb[0], vb[1]);
          tc::Mma16816(o[2 * dp + 1], pa, vb[2], vb[3]);
        }
      }
    }
    tc::WaitCopies<STAGES - 2>();
    __syncthreads();
  }

  sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 1);
  sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 2);
  sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 1);
  sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 2);
  const int col = (lane & 3) * 2;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int m = slot_lo + 8 * half;
    if (slot_pos[m] < 0) continue;
    const float row_max = half ? max_hi : max_lo;
    const float row_sum = half ? sum_hi : sum_lo;
    if (!kTiles && a.splits > 1) {
      const int64_t index = a.PartialIndex(slot_row[m], slot_head[m], blockIdx.z);
      float* dst = a.partial_out + index * D;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        if (i * 8 + col < D) *reinterpret_cast<float2*>(dst + i * 8 + col) = make_float2(o[i][2 * half], o[i][2 * half + 1]);
      }
      if ((lane & 3) == 0) {
        a.partial_ml[2 * index] = row_max;
        a.partial_ml[2 * index + 1] = row_sum;
      }
    } else {
      const float inv = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
      uint16_t* dst = a.out + slot_row[m] * s.QWidth() + static_cast<int64_t>(slot_head[m]) * D;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        if (i * 8 + col < D) {
          *reinterpret_cast<uint32_t*>(dst + i * 8 + col) =
              tc::PackHalf2(o[i][2 * half] * inv, o[i][2 * half + 1] * inv);
        }
      }
    }
  }
}

template <int DP, int WARPS, int BN, int STAGES, bool kTiles>
cudaError_t LaunchTcWith(AttentionArgs<half_bits> a, unsigned grid_x, cudaStream_t stream) {
  using T = TcTile<DP, WARPS, BN, STAGES>;
  static const cudaError_t allowed = cudaFuncSetAttribute(TcAttentionKernel<DP, WARPS, BN, STAGES, kTiles>,
                                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                          static_cast<int>(T::kSmemBytes));
  if (allowed != cudaSuccess) return allowed;
  const int group = a.Group();
  a.heads_per_tile = group < T::kBM ? group : T::kBM;
  a.head_chunks = (group + a.heads_per_tile - 1) / a.heads_per_tile;
  if (kTiles) {
    const int64_t rows_per_tile = T::kBM / a.heads_per_tile;
    grid_x = static_cast<unsigned>((a.shape.rows + rows_per_tile - 1) / rows_per_tile + a.shape.bsz);
  }
  const dim3 grid(grid_x, static_cast<unsigned>(a.shape.num_kv_heads * a.head_chunks),
                  static_cast<unsigned>(kTiles ? 1 : a.splits));
  TcAttentionKernel<DP, WARPS, BN, STAGES, kTiles><<<grid, T::kThreads, T::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

// Decode tiles: one warp, 16 slots, 32 keys a tile, three tiles in flight. Prefill tiles: eight warps,
// 128 slots, 64 keys a tile, double-buffered.
template <int DP>
cudaError_t LaunchTcDims(const AttentionArgs<half_bits>& a, bool prefill_tiles, cudaStream_t stream) {
  const unsigned rows = static_cast<unsigned>(a.shape.rows);
  if (!prefill_tiles) return LaunchTcWith<DP, 1, 32, 3, false>(a, rows, stream);
  const cudaError_t err = LaunchTcWith<DP, 8, 64, 2, true>(a, 0, stream);
  if (err != cudaSuccess) return err;
  AttentionArgs<half_bits> strays = a;
  strays.strays_only = true;
  strays.splits = 1;
  return LaunchTcWith<DP, 1, 32, 3, false>(strays, rows, stream);
}

// head_dim % 8 == 0 and <= 128 (PlanAttention checks); 64 and 128 are the tile widths, smaller head
// dims are zero-padded.
inline cudaError_t LaunchTc(const AttentionArgs<half_bits>& a, bool prefill_tiles, cudaStream_t stream) {
  if (a.shape.head_dim <= 64) return LaunchTcDims<64>(a, prefill_tiles, stream);
  return LaunchTcDims<128>(a, prefill_tiles, stream);
}

}  // namespace fdo::attention
