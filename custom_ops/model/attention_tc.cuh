// The float16 tensor-core attention kernel (FlashAttention-2 style, mma.sync m16n8k16, float32
// accumulators and softmax). A block computes a tile of MMA rows, each a (token row, q head) pair of
// one slot's rows and the q heads of one KV head, so the q heads sharing a KV head read it once. Each
// warp owns MT x 16 MMA rows; the block streams its keys and values through shared memory in tiles of BN keys
// with cp.async (STAGES buffers deep), S = Q K^T and O += P V on tensor cores, an online softmax in
// between. Two uses of the same kernel:
//   kTiles = false: one row per block (decode rows), its keys split `splits` ways (flash-decoding);
//   kTiles = true:  BM / heads rows of one slot per block (prefill chunks), causal over each row's prefix.
#pragma once

#include "../include/tensor_core.cuh"
#include "attention_common.cuh"

namespace fdo::attention {

// One configuration of the kernel: head dim tile DP (64 or 128), WARPS warps of MT m-tiles (16 MMA
// rows each), BN keys a tile, STAGES tiles in flight, at least MIN_BLOCKS blocks an SM (caps the registers).
template <int DP_, int WARPS_, int MT_, int BN_, int STAGES_, int MIN_BLOCKS_, bool kTiles_>
struct TcConfig {
  static constexpr int DP = DP_, WARPS = WARPS_, MT = MT_, BN = BN_, STAGES = STAGES_, MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr bool kTiles = kTiles_;
  static constexpr int kBM = 16 * MT * WARPS;  // MMA rows per block
  static constexpr int kChunks = DP / 8;       // 16-byte chunks per shared row (rows are not padded: see Swizzled)
  static constexpr int kThreads = 32 * WARPS;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kBM + 2 * STAGES * BN) * DP * sizeof(uint16_t);

  // The float16 offset of 16-byte chunk `chunk` of shared row `row`: chunks are XOR-swizzled by the
  // row's low three bits, so the eight rows one ldmatrix reads at a column sit in eight bank groups.
  __device__ __forceinline__ static int Swizzled(int row, int chunk) { return row * DP + ((chunk ^ (row & 7)) << 3); }
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

template <class C>
__global__ void __launch_bounds__(C::kThreads, C::MIN_BLOCKS) TcAttentionKernel(AttentionArgs<half_bits> a) {
  constexpr int DP = C::DP, MT = C::MT, BN = C::BN, STAGES = C::STAGES;
  constexpr int kBM = C::kBM;
  constexpr int kChunks = C::kChunks;
  constexpr int kThreads = C::kThreads;
  constexpr bool kTiles = C::kTiles;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sK = sQ + kBM * DP;
  uint16_t* sV = sK + STAGES * BN * DP;
  __shared__ int mma_pos[kBM];  // the cache position of MMA row m's token row; -1: an unused MMA row
  __shared__ int tile[3];
  __shared__ int max_pos;

  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int head_blocks = s.num_kv_heads * a.head_chunks;
  // Row tiles: blockIdx = (row, head block, split). Prefill tiles: blockIdx.x = tile * head_blocks + head
  // block, so the KV heads of one (long) tile start together.
  const int head_block = kTiles ? static_cast<int>(blockIdx.x % head_blocks) : static_cast<int>(blockIdx.y);
  const int kv_head = head_block / a.head_chunks;
  const int hp = a.heads_per_tile;
  const int first_in_group = (head_block % a.head_chunks) * hp;
  const int chunk_heads = min(hp, a.Group() - first_in_group);
  const int first_head = kv_head * a.Group() + first_in_group;

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
    static_assert(kTiles || C::WARPS == 1, "row tiles run on one warp (the stray check is warp-wide)");
    row_begin = blockIdx.x;
    row_end = row_begin + 1;
    if (a.strays_only && OwnedByTile(a, row_begin)) return;
    if (tid == 0) max_pos = -1;
  }
  // MMA row m is (token row row_begin + m / hp, q head first_head + m % hp). Its q vector is read at
  // once (the token row exists whatever its position); the cache positions follow.
  for (int i = tid; i < kBM * kChunks; i += kThreads) {
    const int m = i / kChunks;
    const int c = i - m * kChunks;
    const int r = m / hp;
    const int hh = m - r * hp;
    const bool ok = hh < chunk_heads && row_begin + r < row_end && c * 8 < D;
    const uint16_t* src = ok ? a.qkv + (row_begin + r) * s.QkvWidth() + static_cast<int64_t>(first_head + hh) * D + c * 8
                             : a.qkv;
    tc::CopyAsync16(sQ + C::Swizzled(m, c), src, ok ? 16 : 0);
  }
  tc::CommitCopies();
  if constexpr (!kTiles) __syncthreads();  // max_pos
  for (int m = tid; m < kBM; m += kThreads) {
    const int r = m / hp;
    const int64_t t = row_begin + r;
    int p = -1;
    if (m - r * hp < chunk_heads && t < row_end && (!kTiles || a.batch[t] == b)) {
      p = static_cast<int>(s.Position(t, a.batch, a.cu, a.dec));
    }
    mma_pos[m] = p;
    if (p >= 0) atomicMax(&max_pos, p);
  }
  __syncthreads();
  const int pmax = max_pos;
  KeyRange range{0, 0};
  if (pmax >= 0) {
    if constexpr (!kTiles) b = a.batch[row_begin];
    range = kTiles ? KeyRange{0, pmax + 1} : SplitRange(pmax + 1, blockIdx.z, a.splits);
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
  const int tiles = static_cast<int>((range.end - range.begin + BN - 1) / BN);
  const uint16_t* keys = a.key_cache + s.CacheOffset(b, 0, kv_head);
  const uint16_t* values = a.value_cache + s.CacheOffset(b, 0, kv_head);
  const int stride = static_cast<int>(s.KvWidth());  // a slot's cache has < 2^31 elements (PlanAttention checks)
  const int key_end = static_cast<int>(range.end);
  auto load_tile = [&](int n, int stage) {
    const int j0 = static_cast<int>(range.begin) + n * BN;
    for (int i = tid; i < BN * kChunks; i += kThreads) {
      const int key = i / kChunks;
      const int c = i - key * kChunks;
      const int j = j0 + key;
      const bool ok = j < key_end && c * 8 < D;
      const int offset = ok ? j * stride + c * 8 : 0;
      const int at = stage * BN * DP + C::Swizzled(key, c);
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
  // block's range; the warp's first and last such keys.
  const int warp_row = warp * 16 * MT;
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
  const int kk_end = (D + 15) / 16;  // 16-wide steps over the head dim that hold data

  float o[MT][DP / 8][4];
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -CUDART_INF_F;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  tc::WaitCopies<STAGES - 2>();
  __syncthreads();
  for (int n = 0; n < tiles; ++n) {
    if (n + STAGES - 1 < tiles) load_tile(n + STAGES - 1, (n + STAGES - 1) % STAGES);
    tc::CommitCopies();
    const int j0 = static_cast<int>(range.begin) + n * BN;
    if (warp_max_pos >= j0) {  // else every key of the tile is past this warp's rows
      const uint16_t* k_tile = sK + (n % STAGES) * BN * DP;
      const uint16_t* v_tile = sV + (n % STAGES) * BN * DP;
      float sc[MT][BN / 8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk) {
        if (kk >= kk_end) break;
        uint32_t qa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          tc::LoadMatrixX4(qa[mt], sQ + C::Swizzled(warp_row + mt * 16 + (lane & 15), 2 * kk + (lane >> 4)));
        }
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          uint32_t kb[4];
          const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
          tc::LoadMatrixX4(kb, k_tile + C::Swizzled(key, 2 * kk + ((lane >> 3) & 1)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            tc::Mma16816(sc[mt][2 * np], qa[mt], kb[0], kb[1]);
            tc::Mma16816(sc[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
          }
        }
      }
      const bool masked = j0 + BN - 1 > warp_min_pos;  // some key of the tile is past some row of the warp
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            sc[mt][i][e] *= a.scale_log2;
            if (masked && j0 + i * 8 + (lane & 3) * 2 + (e & 1) > pos[mt][e >> 1]) sc[mt][i][e] = -CUDART_INF_F;
          }
        }
        float tile_max[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
          tile_max[0] = fmaxf(tile_max[0], fmaxf(sc[mt][i][0], sc[mt][i][1]));
          tile_max[1] = fmaxf(tile_max[1], fmaxf(sc[mt][i][2], sc[mt][i][3]));
        }
        float base[2], corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xFFFFFFFFu, tile_max[h], 1));
          tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xFFFFFFFFu, tile_max[h], 2));
          const float new_max = fmaxf(row_max[mt][h], tile_max[h]);
          base[h] = new_max == -CUDART_INF_F ? 0.0f : new_max;  // a row with no key yet stays empty
          corr[h] = exp2f(row_max[mt][h] - base[h]);
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
            sc[mt][i][e] = exp2f(sc[mt][i][e] - base[e >> 1]);
            row_sum[mt][e >> 1] += sc[mt][i][e];
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = tc::PackHalf2(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
          pa[mt][1] = tc::PackHalf2(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
          pa[mt][2] = tc::PackHalf2(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
          pa[mt][3] = tc::PackHalf2(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
        }
        const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int dp = 0; dp < DP / 16; ++dp) {
          if (dp >= kk_end) break;
          uint32_t vb[4];
          tc::LoadMatrixX4Trans(vb, v_tile + C::Swizzled(key, 2 * dp + (lane >> 4)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            tc::Mma16816(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
            tc::Mma16816(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
          }
        }
      }
    }
    tc::WaitCopies<STAGES - 2>();
    __syncthreads();
  }

  const int col = (lane & 3) * 2;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[mt][h];
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
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

// Row tiles (decode): one warp, 16 MMA rows, 32 keys a tile, three tiles in flight, ~53 KiB of shared memory
// (four blocks an SM). Prefill tiles: 128 MMA rows as four warps of two m-tiles (the B fragments serve both),
// 64 keys a tile, double-buffered (~98 KiB, two blocks an SM).
template <int DP>
using TcRowConfig = TcConfig<DP, 1, 1, 32, 3, 1, false>;
template <int DP>
using TcPrefillConfig = TcConfig<DP, 4, 2, 64, 2, 2, true>;

// Sets the kernel's shared memory limit once; returns the blocks of it that fit on one SM (0 on error).
template <class C>
int TcBlocksPerSm() {
  static const int blocks = [] {
    int n = 0;
    if (cudaFuncSetAttribute(TcAttentionKernel<C>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(C::kSmemBytes)) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, TcAttentionKernel<C>, C::kThreads, C::kSmemBytes) !=
            cudaSuccess) {
      return 0;
    }
    return n;
  }();
  return blocks;
}

// Blocks of the row-tile kernel that fit on one SM for this head dim (the plan sizes its splits by it).
inline int TcRowBlocksPerSm(int head_dim) {
  return head_dim <= 64 ? TcBlocksPerSm<TcRowConfig<64>>() : TcBlocksPerSm<TcRowConfig<128>>();
}

template <class C>
cudaError_t LaunchTcWith(AttentionArgs<half_bits> a, cudaStream_t stream) {
  if (TcBlocksPerSm<C>() == 0) return cudaErrorInvalidConfiguration;
  const int group = a.Group();
  a.heads_per_tile = group < C::kBM ? group : C::kBM;
  a.head_chunks = (group + a.heads_per_tile - 1) / a.heads_per_tile;
  const unsigned head_blocks = static_cast<unsigned>(a.shape.num_kv_heads * a.head_chunks);
  dim3 grid(static_cast<unsigned>(a.shape.rows), head_blocks, static_cast<unsigned>(a.splits));
  if (C::kTiles) {  // an upper bound of the tiles: each slot's rows, rounded up
    const int64_t rows_per_tile = C::kBM / a.heads_per_tile;
    const int64_t tiles = (a.shape.rows + rows_per_tile - 1) / rows_per_tile + a.shape.bsz;
    grid = dim3(static_cast<unsigned>(tiles * head_blocks), 1, 1);
  }
  TcAttentionKernel<C><<<grid, C::kThreads, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

// Prefill tiles, then the rows no tile owns (row tiles, unsplit).
template <class Prefill, class Rows>
cudaError_t LaunchTcPrefill(const AttentionArgs<half_bits>& a, cudaStream_t stream) {
  const cudaError_t err = LaunchTcWith<Prefill>(a, stream);
  if (err != cudaSuccess) return err;
  AttentionArgs<half_bits> strays = a;
  strays.strays_only = true;
  strays.splits = 1;
  return LaunchTcWith<Rows>(strays, stream);
}

template <int DP>
cudaError_t LaunchTcDims(const AttentionArgs<half_bits>& a, bool prefill_tiles, cudaStream_t stream) {
  if (!prefill_tiles) return LaunchTcWith<TcRowConfig<DP>>(a, stream);
  return LaunchTcPrefill<TcPrefillConfig<DP>, TcRowConfig<DP>>(a, stream);
}

// head_dim % 8 == 0 and <= 128 (PlanAttention checks); 64 and 128 are the tile widths, smaller head
// dims are zero-padded.
inline cudaError_t LaunchTc(const AttentionArgs<half_bits>& a, bool prefill_tiles, cudaStream_t stream) {
  if (a.shape.head_dim <= 64) return LaunchTcDims<64>(a, prefill_tiles, stream);
  return LaunchTcDims<128>(a, prefill_tiles, stream);
}

}  // namespace fdo::attention
