// The prefill attention kernel on Hopper's warpgroup MMA (wgmma, sm_90a; FlashAttention-3's arithmetic
// without its warp specialisation). A block computes a tile of MMA rows as the mma.sync kernel does
// (attention_tc.cuh: rows are (token row, q head) pairs of one slot and the q heads of one KV head, causal
// over each row's prefix), each warpgroup 64 of them: S = Q K^T with Q and K in shared memory, the online
// softmax on S's accumulators, O += P V with P from registers and V in shared memory read N-major. Keys
// and values stream through shared memory in tiles of BN keys with cp.async, STAGES tiles deep; one
// warpgroup's MMAs can run while another does its softmax.
#pragma once

#include <type_traits>

#include "../include/tensor_core.cuh"
#include "../include/wgmma.cuh"
#include "attention_common.cuh"
#include "attention_tc_tiles.cuh"

namespace fdo::attention {

// One configuration: head dim tile DP (64 or 128), WGS warpgroups of 64 MMA rows, BN keys a tile (64 or 128),
// STAGES tiles in flight.
template <int DP_, int WGS_, int BN_, int STAGES_>
struct WgConfig {
  static constexpr int DP = DP_, WGS = WGS_, BN = BN_, STAGES = STAGES_;
  static constexpr bool kWgmma = true, kTiles = true;
  static constexpr int kBM = 64 * WGS;
  static constexpr int kThreads = 128 * WGS;
  static constexpr int kChunks = DP / 8;  // 16-byte chunks of a row
  // Q, then STAGES key tiles, then STAGES value tiles, each in wgmma's swizzled slabs (wgmma.cuh), plus
  // the slack that aligns the start to 1024 bytes.
  static constexpr int kTileElems = BN * DP;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM * DP + 2 * STAGES * kTileElems) * 2 + 1024;
};

// FDO_WGMMA: the build targets sm_90a (fdoverlap_cli/ops.py defines it); without it the kernel is empty and
// the launcher never picks it.
#if defined(FDO_WGMMA) && defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "FDO_WGMMA needs an sm_90a build (-gencode=arch=compute_90a,code=sm_90a)"
#endif

// The grid: WgTileBlocks blocks of prefill tiles (an upper bound, as for the mma.sync kernel), then
// WgStrayBlocks blocks that take the rows no tile owns (see OwnedByTile), a row a thread: the padding or
// out-of-range rows the mma.sync kernels' second pass visits with a block a row.
__host__ __device__ inline int64_t WgTileBlocks(const AttentionShape& s, int rows_per_tile, int head_blocks) {
  return ((s.rows + rows_per_tile - 1) / rows_per_tile + s.bsz) * head_blocks;
}
template <class C>
__host__ __device__ inline int64_t WgStrayBlocks(const AttentionShape& s, int head_blocks) {
  return (s.rows + C::kThreads - 1) / C::kThreads * head_blocks;
}

// A stray row's q heads first_head .. first_head + heads - 1, a warp a head, one key at a time: zeros for
// a row without a cache position, else the softmax-weighted values of its slot's keys 0 .. p.
template <int DP>
__device__ __forceinline__ void StrayRow(const AttentionArgs<half_bits>& a, int64_t t, int kv_head, int first_head,
                                         int heads, int warp, int warps) {
  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int lane = threadIdx.x & 31;
  const int64_t p = s.Position(t, a.batch, a.cu, a.dec);
  for (int h = warp; h < heads; h += warps) {
    uint16_t* dst = a.out + t * s.QWidth() + static_cast<int64_t>(first_head + h) * D;
    if (p < 0) {
      for (int d = lane; d < D; d += 32) dst[d] = 0;
      continue;
    }
    const uint16_t* q = a.qkv + t * s.QkvWidth() + static_cast<int64_t>(first_head + h) * D;
    float qv[DP / 32], acc[DP / 32];
#pragma unroll
    for (int i = 0; i < DP / 32; ++i) {
      const int d = lane + 32 * i;
      qv[i] = d < D ? LoadFloat(q[d]) : 0.0f;
      acc[i] = 0.0f;
    }
    float m = -CUDART_INF_F, l = 0.0f;
    for (int64_t j = 0; j <= p; ++j) {
      const int64_t at = s.CacheOffset(a.batch[t], j, kv_head);
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < DP / 32; ++i) {
        const int d = lane + 32 * i;
        if (d < D) dot += qv[i] * LoadFloat(a.key_cache[at + d]);
      }
      for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xFFFFFFFFu, dot, offset);
      const float x = dot * a.scale_log2;
      const float new_m = fmaxf(m, x);
      const float corr = exp2f(m - new_m), w = exp2f(x - new_m);
      l = l * corr + w;
#pragma unroll
      for (int i = 0; i < DP / 32; ++i) {
        const int d = lane + 32 * i;
        acc[i] = acc[i] * corr + (d < D ? w * LoadFloat(a.value_cache[at + d]) : 0.0f);
      }
      m = new_m;
    }
#pragma unroll
    for (int i = 0; i < DP / 32; ++i) {
      const int d = lane + 32 * i;
      if (d < D) dst[d] = StoreFloat<uint16_t>(acc[i] / l);
    }
  }
}

template <class C>
__global__ void __launch_bounds__(C::kThreads, 1) WgAttentionKernel(AttentionArgs<half_bits> a) {
#ifdef FDO_WGMMA
  constexpr int DP = C::DP, BN = C::BN, STAGES = C::STAGES, kBM = C::kBM, kChunks = C::kChunks;
  constexpr int kThreads = C::kThreads;
  extern __shared__ unsigned char smem_raw[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint16_t* sK = sQ + kBM * DP;
  uint16_t* sV = sK + STAGES * C::kTileElems;
  __shared__ int mma_pos[kBM];  // the cache position of MMA row m's token row; -1: an unused MMA row
  __shared__ int tile[3];
  __shared__ int max_pos;

  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wgroup = warp >> 2;  // this thread's warpgroup
  const int head_blocks = s.num_kv_heads * a.head_chunks;
  const int head_block = static_cast<int>(blockIdx.x % head_blocks);
  const HeadBlock hb = HeadBlockOf(a, head_block);
  const int kv_head = hb.kv_head, hp = hb.hp, first_head = hb.first_head;

  const int64_t tile_blocks = WgTileBlocks(s, kBM / hp, head_blocks);
  if (blockIdx.x >= tile_blocks) {  // a stray block: rows (blockIdx.x - tile_blocks) / head_blocks * kThreads on
    __shared__ int strays[kThreads];
    __shared__ int stray_count;
    if (tid == 0) stray_count = 0;
    __syncthreads();
    const int64_t t = (blockIdx.x - tile_blocks) / head_blocks * kThreads + tid;
    if (t < s.rows && !OwnedByTileThread(a, t)) strays[atomicAdd(&stray_count, 1)] = tid;
    __syncthreads();
    const int64_t first_row = t - tid;
    for (int i = 0; i < stray_count; ++i) StrayRow<DP>(a, first_row + strays[i], kv_head, first_head, hb.heads, warp, kThreads / 32);
    return;
  }
  if (warp == 0) FindTile(a, kBM / hp, static_cast<int>(blockIdx.x / head_blocks), tile);
  if (tid == 0) max_pos = -1;
  __syncthreads();
  const int b = tile[0];
  if (b < 0) return;
  const int64_t row_begin = tile[1], row_end = tile[2];
  LoadTileQ<kBM, kChunks, kThreads>(a, hb, row_begin, row_end, sQ, [](int m, int c) { return wg::SlabOffset(m, c, kBM); });
  tc::CommitCopies();
  TilePositions<kBM, kThreads>(a, hb, row_begin, row_end, b, mma_pos, &max_pos);
  __syncthreads();
  const int pmax = max_pos;
  if (pmax < 0) {
    tc::WaitCopies<0>();
    return;
  }
  const int key_end = pmax + 1;
  const int tiles = (key_end + BN - 1) / BN;
  const uint16_t* keys = a.key_cache + s.CacheOffset(b, 0, kv_head);
  const uint16_t* values = a.value_cache + s.CacheOffset(b, 0, kv_head);
  const int stride = static_cast<int>(s.KvWidth());
  constexpr int kRounds = (BN * kChunks + kThreads - 1) / kThreads;
  auto load_tile = [&](int n, int stage) {
#pragma unroll
    for (int round = 0; round < kRounds; ++round) {
      const int i = tid + round * kThreads;
      if ((BN * kChunks) % kThreads != 0 && i >= BN * kChunks) break;
      const int key = i / kChunks;
      const int c = i - key * kChunks;
      const int j = n * BN + key;
      const bool ok = j < key_end && c * 8 < D;
      const int offset = ok ? j * stride + c * 8 : 0;
      const int at = stage * C::kTileElems + wg::SlabOffset(key, c, BN);
      tc::CopyAsync16(sK + at, keys + offset, ok ? 16 : 0);
      tc::CopyAsync16(sV + at, values + offset, ok ? 16 : 0);
    }
  };
#pragma unroll
  for (int n = 0; n < STAGES - 1; ++n) {
    if (n < tiles) load_tile(n, n);
    tc::CommitCopies();
  }

  // This thread's two rows (g and g + 8 of its warp's 16) and its warpgroup's first and last positions.
  const int row0 = wgroup * 64 + (warp & 3) * 16 + (lane >> 2);
  const int pos[2] = {min(mma_pos[row0], key_end - 1), min(mma_pos[row0 + 8], key_end - 1)};
  int group_max = -1, group_min = INT_MAX;
  for (int m = wgroup * 64; m < wgroup * 64 + 64; ++m) {
    const int p = mma_pos[m];
    group_max = max(group_max, p);
    if (p >= 0) group_min = min(group_min, p);
  }
  const float scale = a.scale_log2;
  float o[DP / 2];
#pragma unroll
  for (int i = 0; i < DP / 2; ++i) o[i] = 0.0f;
  float row_max[2] = {-CUDART_INF_F, -CUDART_INF_F}, row_sum[2] = {0.0f, 0.0f};

  // Descriptors: Q's rows of this warpgroup, a tile's keys (both K-major: 16 dims of step kk are 32 bytes
  // into a 128-byte row of slab kk / 4), a tile's values N-major (16 keys of step kk are 2048 bytes on;
  // the head dims' slabs are BN rows apart, the 8-key row groups 1024 bytes).
  const uint64_t q_desc = wg::Descriptor(tc::SharedAddress(sQ) + wgroup * 64 * 128, 16, 1024);
  const uint64_t k_desc = wg::Descriptor(tc::SharedAddress(sK), 16, 1024);
  const uint64_t v_desc = wg::Descriptor(tc::SharedAddress(sV), BN * 128, 1024);
  auto dims_step = [](int kk, int rows) { return static_cast<uint64_t>(((kk >> 2) * rows * 128 + (kk & 3) * 32) >> 4); };

  tc::WaitCopies<STAGES - 2>();
  wg::FenceProxyAsync();
  __syncthreads();
  for (int n = 0; n < tiles; ++n) {
    if (n + STAGES - 1 < tiles) load_tile(n + STAGES - 1, (n + STAGES - 1) % STAGES);
    tc::CommitCopies();
    const int j0 = n * BN;
    const uint64_t stage = static_cast<uint64_t>((n % STAGES) * C::kTileElems * 2) >> 4;
    auto tile_step = [&](auto masked_tag) {
      constexpr bool kMasked = decltype(masked_tag)::value;
      float sc[BN / 2];
      wg::Fence();
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        wg::Mma<BN>::template SS<0>(sc, q_desc + dims_step(kk, kBM), k_desc + stage + dims_step(kk, BN), kk > 0);
      }
      wg::Commit();
      wg::Wait<0>();
      if constexpr (kMasked) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) {
          if (j0 + (i >> 2) * 8 + (lane & 3) * 2 + (i & 1) > pos[(i >> 1) & 1]) sc[i] = -CUDART_INF_F;
        }
      }
      float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) tile_max[(i >> 1) & 1] = fmaxf(tile_max[(i >> 1) & 1], sc[i]);
      float base[2], corr[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = tc::QuadMax(tile_max[h]);
        const float new_max = fmaxf(row_max[h], tile_max[h] * scale);
        base[h] = new_max == -CUDART_INF_F ? 0.0f : new_max;  // a row with no key yet stays empty
        corr[h] = tc::Exp2Approx(row_max[h] - base[h]);
        row_max[h] = new_max;
        row_sum[h] *= corr[h];
      }
#pragma unroll
      for (int i = 0; i < DP / 2; ++i) o[i] *= corr[(i >> 1) & 1];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) {
        sc[i] = tc::Exp2Approx(fmaf(sc[i], scale, -base[(i >> 1) & 1]));  // -inf gives 0
        row_sum[(i >> 1) & 1] += sc[i];
      }
      uint32_t pa[BN / 16][4];  // P as the A operand: keys 16 kk .. 16 kk + 15 of this thread's rows
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        pa[kk][0] = tc::PackHalf2(sc[8 * kk + 0], sc[8 * kk + 1]);
        pa[kk][1] = tc::PackHalf2(sc[8 * kk + 2], sc[8 * kk + 3]);
        pa[kk][2] = tc::PackHalf2(sc[8 * kk + 4], sc[8 * kk + 5]);
        pa[kk][3] = tc::PackHalf2(sc[8 * kk + 6], sc[8 * kk + 7]);
      }
      wg::Fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        wg::Mma<DP>::template RS<1>(o, pa[kk], v_desc + stage + static_cast<uint64_t>(kk * 2048 >> 4), 1);
      }
      wg::Commit();
      wg::Wait<0>();
    };
    if (j0 <= group_max) {  // else every key of the tile is past this warpgroup's rows
      if (j0 + BN - 1 > group_min) {
        tile_step(std::true_type{});
      } else {
        tile_step(std::false_type{});
      }
    }
    tc::WaitCopies<STAGES - 2>();
    wg::FenceProxyAsync();
    __syncthreads();
  }

  const int col = (lane & 3) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = tc::QuadSum(row_sum[h]);
    const int m = row0 + 8 * h;
    if (mma_pos[m] < 0) continue;
    const int64_t row = row_begin + m / hp;
    const int head = first_head + m % hp;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    uint16_t* dst = a.out + row * s.QWidth() + static_cast<int64_t>(head) * D;
#pragma unroll
    for (int j = 0; j < DP / 8; ++j) {
      if (j * 8 + col < D) {
        *reinterpret_cast<uint32_t*>(dst + j * 8 + col) = tc::PackHalf2(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      }
    }
  }
#endif
}

}  // namespace fdo::attention
