// The float16 tensor-core attention kernel (FlashAttention-2 style, mma.sync m16n8k16, float32
// accumulators and softmax). A block computes a tile of MMA rows, each a (token row, q head) pair of
// one slot's rows and the q heads of one KV head, so the q heads sharing a KV head read it once. Each
// warp owns MT x 16 MMA rows; the block streams its keys and values through shared memory in tiles of BN keys
// with cp.async (STAGES buffers deep), S = Q K^T and O += P V on tensor cores, an online softmax in
// between. Two uses of the same kernel:
//   kTiles = false: one row per block (decode rows), its keys split `splits` ways (flash-decoding); with
//                   kWarpKeys the block's warps split its keys again, each with its own pipeline, and merge
//                   their parts in shared memory (attention_tc_merge.cuh), so no split is needed to use warps;
//   kTiles = true:  BM / heads rows of one slot per block (prefill chunks), causal over each row's prefix.
#pragma once

#include <type_traits>

#include "../include/tensor_core.cuh"
#include "attention_common.cuh"
#include "attention_tc_merge.cuh"
#include "attention_tc_tiles.cuh"

namespace fdo::attention {

// One configuration of the kernel: head dim tile DP (64 or 128), WARPS warps of MT m-tiles (16 MMA
// rows each), BN keys a tile, STAGES tiles in flight, at least MIN_BLOCKS blocks an SM (caps the registers).
template <int DP_, int WARPS_, int MT_, int BN_, int STAGES_, int MIN_BLOCKS_, bool kTiles_, bool kQRegs_ = false,
          bool kWarpKeys_ = false>
struct TcConfig {
  static constexpr int DP = DP_, WARPS = WARPS_, MT = MT_, BN = BN_, STAGES = STAGES_, MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr bool kTiles = kTiles_;
  static constexpr bool kQRegs = kQRegs_;        // Q fragments held in registers across the key loop
  static constexpr bool kWgmma = false;
  static constexpr bool kWarpKeys = kWarpKeys_;  // every warp the same MMA rows and its own part of the keys
  static constexpr int kPipes = kWarpKeys ? WARPS : 1;  // K/V pipelines (STAGES tiles each): one a warp, or shared
  static constexpr int kBM = 16 * MT * WARPS / kPipes;  // MMA rows per block
  static constexpr int kChunks = DP / 8;  // 16-byte chunks per shared row (rows are not padded: see Swizzled)
  static constexpr int kThreads = 32 * WARPS;
  static constexpr int kCopyThreads = kThreads / kPipes;  // the threads that fill one pipeline
  static constexpr int kPipeElems = STAGES * BN * DP;     // float16s of one pipeline's keys (as many values)
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM * DP + 2 * kPipes * kPipeElems) * sizeof(uint16_t);

  // The float16 offset of 16-byte chunk `chunk` of shared row `row`: chunks are XOR-swizzled by the
  // row's low three bits, so the eight rows one ldmatrix reads at a column sit in eight bank groups.
  __device__ __forceinline__ static int Swizzled(int row, int chunk) { return row * DP + ((chunk ^ (row & 7)) << 3); }
};

template <class C>
__global__ void __launch_bounds__(C::kThreads, C::MIN_BLOCKS) TcAttentionKernel(AttentionArgs<half_bits> a) {
  constexpr int DP = C::DP, MT = C::MT, BN = C::BN, STAGES = C::STAGES;
  constexpr int kBM = C::kBM;
  constexpr int kChunks = C::kChunks;
  constexpr int kThreads = C::kThreads;
  constexpr bool kTiles = C::kTiles;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int pipe = C::kWarpKeys ? warp : 0;
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sK = sQ + kBM * DP + pipe * C::kPipeElems;  // this warp's pipeline
  uint16_t* sV = sQ + kBM * DP + (C::kPipes + pipe) * C::kPipeElems;
  __shared__ int mma_pos[kBM];  // the cache position of MMA row m's token row; -1: an unused MMA row
  __shared__ int tile[3];
  __shared__ int max_pos;

  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int head_blocks = s.num_kv_heads * a.head_chunks;
  // Row tiles: blockIdx = (row, head block, split). Prefill tiles: blockIdx.x = tile * head_blocks + head
  // block, so the KV heads of one (long) tile start together.
  const int head_block = kTiles ? static_cast<int>(blockIdx.x % head_blocks) : static_cast<int>(blockIdx.y);
  const HeadBlock hb = HeadBlockOf(a, head_block);
  const int kv_head = hb.kv_head, hp = hb.hp, chunk_heads = hb.heads, first_head = hb.first_head;

  int64_t row_begin, row_end;
  int b = -1;
  if constexpr (kTiles) {
    if (warp == 0) FindTile(a, kBM / hp, static_cast<int>(blockIdx.x / head_blocks), tile);
    if (tid == 0) max_pos = -1;
    __syncthreads();
    b = tile[0];
    if (b < 0) return;
    row_begin = tile[1];
    row_end = tile[2];
  } else {
    static_assert(kTiles || C::WARPS == 1 || C::kWarpKeys, "row tiles: every warp checks the strays for itself");
    row_begin = blockIdx.x;
    row_end = row_begin + 1;
    if (a.strays_only && OwnedByTile(a, row_begin)) return;
    if (tid == 0) max_pos = -1;
  }
  LoadTileQ<kBM, kChunks, kThreads>(a, hb, row_begin, row_end, sQ, [](int m, int c) { return C::Swizzled(m, c); });
  tc::CommitCopies();
  if constexpr (!kTiles) __syncthreads();  // max_pos
  TilePositions<kBM, kThreads>(a, hb, row_begin, row_end, kTiles ? b : -1, mma_pos, &max_pos);
  __syncthreads();
  const int pmax = max_pos;
  // Row tiles: block z owns parts [z P, z P + P) of splits * P parts of the keys, P = kPipes, and each
  // warp of kWarpKeys one of them.
  constexpr int kParts = C::kPipes;
  KeyRange range{0, 0};
  if (pmax >= 0) {
    if constexpr (!kTiles) b = a.batch[row_begin];
    range = kTiles ? KeyRange{0, pmax + 1} : SplitRanges(pmax + 1, blockIdx.z * kParts, kParts, a.splits * kParts);
  }
  if (range.begin >= range.end) {
    tc::WaitCopies<0>();
    if (pmax < 0) {  // row tiles: a padding row or a row outside the cache gives zeros; tiles: nothing to do
      if (!kTiles && a.splits == 1) {
        for (int i = tid; i < chunk_heads * D; i += kThreads) a.out[row_begin * s.QWidth() + first_head * D + i] = 0;
      }
    } else {  // an empty split
      for (int m = tid; m < kBM; m += kThreads) {
        if (mma_pos[m] >= 0) a.WriteEmptyPartial(row_begin + m / hp, first_head + m % hp, blockIdx.z);
      }
    }
    return;
  }
  if constexpr (C::kWarpKeys) range = SplitRange(pmax + 1, blockIdx.z * kParts + warp, a.splits * kParts);
  const int tiles = range.end > range.begin ? static_cast<int>((range.end - range.begin + BN - 1) / BN) : 0;
  const uint16_t* keys = a.key_cache + s.CacheOffset(b, 0, kv_head);
  const uint16_t* values = a.value_cache + s.CacheOffset(b, 0, kv_head);
  const int stride = static_cast<int>(s.KvWidth());  // a slot's cache has < 2^31 elements (PlanAttention checks)
  const int key_end = static_cast<int>(range.end);
  // Each thread copies the same 16-byte column chunk of every (kCopyThreads / kChunks)-th key of a tile.
  constexpr int kCopyThreads = C::kCopyThreads;
  static_assert((BN * kChunks) % kCopyThreads == 0, "a tile is a whole number of copy rounds");
  const int copy_tid = C::kWarpKeys ? lane : tid;
  const int copy_chunk = copy_tid % kChunks;
  const int copy_key = copy_tid / kChunks;
  const bool chunk_ok = copy_chunk * 8 < D;
  auto load_tile = [&](int n, int stage) {
    const int j0 = static_cast<int>(range.begin) + n * BN;
#pragma unroll
    for (int round = 0; round < BN * kChunks / kCopyThreads; ++round) {
      const int key = copy_key + round * (kCopyThreads / kChunks);
      const int j = j0 + key;
      const bool ok = j < key_end && chunk_ok;
      const int offset = ok ? j * stride + copy_chunk * 8 : 0;
      const int at = stage * BN * DP + C::Swizzled(key, copy_chunk);
      tc::CopyAsync16(sK + at, keys + offset, ok ? 16 : 0);
      tc::CopyAsync16(sV + at, values + offset, ok ? 16 : 0);
    }
  };
#pragma unroll
  for (int n = 0; n < STAGES - 1; ++n) {
    if (n < tiles) load_tile(n, n);
    tc::CommitCopies();
  }

  // This thread's rows: g and g + 8 of each of the warp's m-tiles, each with the last key it sees in this
  // block's (kWarpKeys: this warp's) range; the warp's first and last such keys.
  const int warp_row = C::kWarpKeys ? 0 : warp * 16 * MT;
  int pos[MT][2];
  int warp_max_pos = -1, warp_min_pos = INT_MAX;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      pos[mt][h] = min(mma_pos[warp_row + mt * 16 + h * 8 + (lane >> 2)], key_end - 1);
      warp_max_pos = max(warp_max_pos, pos[mt][h]);
      if (pos[mt][h] >= 0) warp_min_pos = min(warp_min_pos, pos[mt][h]);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    warp_max_pos = max(warp_max_pos, __shfl_xor_sync(0xFFFFFFFFu, warp_max_pos, offset));
    warp_min_pos = min(warp_min_pos, __shfl_xor_sync(0xFFFFFFFFu, warp_min_pos, offset));
  }
  // The whole DP width is computed: the head dims past D are zeros in shared memory (the copies fill
  // them so), which add nothing to S and leave O's unused columns at zero, and the loops stay free of
  // branches between the MMAs.
  const float scale = a.scale_log2;  // > 0 (PlanAttention checks), so the max of raw scores scales to the max

  float o[MT][DP / 8][4];
  float row_max[MT][2], row_sum[MT][2];  // row_max in scaled log2 units
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -CUDART_INF_F;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  // The ldmatrix row addresses (bytes, shared space). Swizzled(row, 8 h + c) with c < 8 is
  // row * DP + 8 (8 h + (c ^ (row & 7))), and every row this lane reads has row & 7 = lane & 7: so the
  // address of 16-wide step kk is one of four per-lane bases (kk % 4) plus a constant (kk / 4, the tile
  // row), which the loops below fold into the instructions' immediate offsets.
  const int swz = lane & 7;
  uint32_t q_addr[4], k_addr[4], v_addr[4];  // k_addr, v_addr: stage 0
  {
    const uint32_t q_base = tc::SharedAddress(sQ) + 2u * (warp_row + (lane & 15)) * DP;
    const uint32_t k_base = tc::SharedAddress(sK) + 2u * ((lane & 7) + ((lane >> 4) << 3)) * DP;
    const uint32_t v_base = tc::SharedAddress(sV) + 2u * ((lane & 7) + ((lane >> 3) & 1) * 8) * DP;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      q_addr[c] = q_base + 16u * ((2 * c + (lane >> 4)) ^ swz);
      k_addr[c] = k_base + 16u * ((2 * c + ((lane >> 3) & 1)) ^ swz);
      v_addr[c] = v_base + 16u * ((2 * c + (lane >> 4)) ^ swz);
    }
  }
  // Byte offset of step kk (16 columns) and of 16 rows.
  auto step = [](int kk) { return static_cast<uint32_t>((kk >> 2) * 128); };
  constexpr uint32_t kRows16 = 2u * 16 * DP;

  tc::WaitCopies<STAGES - 2>();
  __syncthreads();
  // kQRegs: the warp's Q fragments stay in registers for the whole loop (no shared reads of Q per tile).
  uint32_t q_regs[C::kQRegs ? MT : 1][C::kQRegs ? DP / 16 : 1][4];
  if constexpr (C::kQRegs) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        tc::LoadMatrixX4(q_regs[mt][kk], q_addr[kk & 3] + mt * kRows16 + step(kk));
      }
    }
  }
  for (int n = 0; n < tiles; ++n) {
    if (n + STAGES - 1 < tiles) load_tile(n + STAGES - 1, (n + STAGES - 1) % STAGES);
    tc::CommitCopies();
    const int j0 = static_cast<int>(range.begin) + n * BN;
    // One tile: S = Q K^T, the causal mask when kMasked, the online softmax, O += P V. Instantiated
    // twice so the tiles wholly below the diagonal run no mask instructions.
    auto tile_step = [&](auto masked_tag) {
      constexpr bool kMasked = decltype(masked_tag)::value;
      const uint32_t stage_bytes = static_cast<uint32_t>(n % STAGES) * (2u * BN * DP);
      float sc[MT][BN / 8][4];  // raw scores q . k, then the softmax weights
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        uint32_t q_smem[C::kQRegs ? 1 : MT][4];
        if constexpr (!C::kQRegs) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            tc::LoadMatrixX4(q_smem[mt], q_addr[kk & 3] + mt * kRows16 + step(kk));
          }
        }
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          uint32_t kb[4];  // keys np * 16 + (lane & 7) + 8 (lane / 16), columns of step kk
          tc::LoadMatrixX4(kb, k_addr[kk & 3] + stage_bytes + np * kRows16 + step(kk));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint32_t(&qa)[4] = C::kQRegs ? q_regs[mt][kk] : q_smem[C::kQRegs ? 0 : mt];
            tc::Mma16816(sc[mt][2 * np], qa, kb[0], kb[1]);
            tc::Mma16816(sc[mt][2 * np + 1], qa, kb[2], kb[3]);
          }
        }
      }
      if constexpr (kMasked) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              if (j0 + i * 8 + (lane & 3) * 2 + (e & 1) > pos[mt][e >> 1]) sc[mt][i][e] = -CUDART_INF_F;
            }
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
          tile_max[0] = fmaxf(tile_max[0], fmaxf(sc[mt][i][0], sc[mt][i][1]));
          tile_max[1] = fmaxf(tile_max[1], fmaxf(sc[mt][i][2], sc[mt][i][3]));
        }
        float base[2], corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tile_max[h] = tc::QuadMax(tile_max[h]);
          const float new_max = fmaxf(row_max[mt][h], tile_max[h] * scale);
          base[h] = new_max == -CUDART_INF_F ? 0.0f : new_max;  // a row with no key yet stays empty
          corr[h] = tc::Exp2Approx(row_max[mt][h] - base[h]);
          row_max[mt][h] = new_max;
          row_sum[mt][h] *= corr[h];
        }
#pragma unroll
        for (int i = 0; i < DP / 8; ++i) {
          o[mt][i][0] *= corr[0];
          o[mt][i][1] *= corr[0];
          o[mt][i][2] *= corr[1];
          o[mt][i][3] *= corr[1];
        }
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            sc[mt][i][e] = tc::Exp2Approx(fmaf(sc[mt][i][e], scale, -base[e >> 1]));  // -inf gives 0
            row_sum[mt][e >> 1] += sc[mt][i][e];
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MT][4];  // P as the A operand straight from the accumulators (no shared round trip)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = tc::PackHalf2(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
          pa[mt][1] = tc::PackHalf2(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
          pa[mt][2] = tc::PackHalf2(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
          pa[mt][3] = tc::PackHalf2(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < DP / 16; ++dp) {
          uint32_t vb[4];  // keys kk * 16 + (lane & 7) + 8 (lane / 8 % 2), columns of step dp
          tc::LoadMatrixX4Trans(vb, v_addr[dp & 3] + stage_bytes + kk * kRows16 + step(dp));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            tc::Mma16816(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
            tc::Mma16816(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
          }
        }
      }
    };
    if (j0 + BN - 1 > warp_min_pos) {  // some key of the tile is past some row of the warp (warp-uniform)
      if (warp_max_pos >= j0) tile_step(std::true_type{});  // else every key is past this warp's rows
    } else {
      tile_step(std::false_type{});
    }
    tc::WaitCopies<STAGES - 2>();
    if constexpr (C::kWarpKeys) {
      __syncwarp();
    } else {
      __syncthreads();
    }
  }
  if constexpr (C::kWarpKeys) {
    MergeWarpKeys<C>(a, o[0], row_max[0], row_sum[0], reinterpret_cast<float*>(sQ + kBM * DP), mma_pos, row_begin,
                     first_head);
    return;
  }

  const int col = (lane & 3) * 2;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = tc::QuadSum(row_sum[mt][h]);
      const int m = warp_row + mt * 16 + h * 8 + (lane >> 2);
      if (mma_pos[m] < 0) continue;
      const int64_t row = row_begin + m / hp;
      const int head = first_head + m % hp;
      if (!kTiles && a.splits > 1) {
        const int64_t index = a.PartialIndex(row, head, blockIdx.z);
        float* dst = a.partial_out + index * D;
#pragma unroll
        for (int i = 0; i < DP / 8; ++i) {
          if (i * 8 + col < D) *reinterpret_cast<float2*>(dst + i * 8 + col) = make_float2(o[mt][i][2 * h], o[mt][i][2 * h + 1]);
        }
        if ((lane & 3) == 0) {
          a.partial_ml[2 * index] = row_max[mt][h];
          a.partial_ml[2 * index + 1] = sum;
        }
      } else {
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        uint16_t* dst = a.out + row * s.QWidth() + static_cast<int64_t>(head) * D;
#pragma unroll
        for (int i = 0; i < DP / 8; ++i) {
          if (i * 8 + col < D) {
            *reinterpret_cast<uint32_t*>(dst + i * 8 + col) =
                tc::PackHalf2(o[mt][i][2 * h] * inv, o[mt][i][2 * h + 1] * inv);
          }
        }
      }
    }
  }
}

}  // namespace fdo::attention
