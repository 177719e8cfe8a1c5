// The tensor-core attention kernel's configurations and launchers: row tiles for decode rows, and the
// decode and prefill configurations the host picks by name (FDOVERLAP_DECODE_TC, FDOVERLAP_PREFILL_TC,
// see attention.h).
#pragma once

#include "attention_tc.cuh"
#include "attention_wg.cuh"

namespace fdo::attention {

// Row tiles (decode): one warp, 16 MMA rows, 32 keys a tile, three tiles in flight, ~53 KiB of shared memory
// (four blocks an SM).
template <int DP>
using TcRowConfig = TcConfig<DP, 1, 1, 32, 3, 1, false>;

// The decode configurations of more than one warp a block, in the order of kDecodeTcNames (attention.h;
// index 0, "rows", is TcRowConfig): w<warps>n<keys a tile>, the warps splitting one row's keys, each with
// its own three-stage pipeline (kWarpKeys). Shared memory at DP = 128 and blocks an SM:
//   w4n32  4 warps, each the pipeline of a row-tile block: 196 KiB, 1
//   w8n16  8 warps of half-size tiles (more warps to hide latency, as many bytes in flight): 196 KiB, 1
template <int DP, int kIndex>
struct TcDecode;
template <int DP>
struct TcDecode<DP, 1> : TcConfig<DP, 4, 1, 32, 3, 1, false, false, true> {};
template <int DP>
struct TcDecode<DP, 2> : TcConfig<DP, 8, 1, 16, 3, 1, false, false, true> {};
static_assert(sizeof(kDecodeTcNames) / sizeof(kDecodeTcNames[0]) == 3, "rows and one TcDecode a name");

// The prefill tile configurations, in the order of kPrefillTcNames (attention.h): w<warps>m<m-tiles a
// warp>n<keys a tile>[s<stages>][q: Q in registers]. Shared memory at DP = 128 and blocks an SM:
//   w4m2n64   128 MMA rows, 4 warps x 32 rows (FlashAttention-2's forward shape on Hopper), 2 stages: 96 KiB, 2
//   w4m2n32q  the same rows, 32 keys a tile and Q in registers (fewer shared reads a MMA), 3 stages: 80 KiB, 2
//   w8m1n64   128 MMA rows as 8 warps x 16 rows (more warps to hide latency), 2 stages: 96 KiB, 2
//   w8m2n64   256 MMA rows, 8 warps x 32 rows (half the K/V traffic a MMA), 2 stages: 128 KiB, 1
//   w4m2n64s3 as w4m2n64 with 3 stages: 128 KiB, 1
template <int DP, int kIndex>
struct TcPrefill;
template <int DP>
struct TcPrefill<DP, 0> : TcConfig<DP, 4, 2, 64, 2, 2, true> {};
template <int DP>
struct TcPrefill<DP, 1> : TcConfig<DP, 4, 2, 32, 3, 2, true, true> {};
template <int DP>
struct TcPrefill<DP, 2> : TcConfig<DP, 8, 1, 64, 2, 2, true> {};
template <int DP>
struct TcPrefill<DP, 3> : TcConfig<DP, 8, 2, 64, 2, 1, true> {};
template <int DP>
struct TcPrefill<DP, 4> : TcConfig<DP, 4, 2, 64, 3, 1, true> {};
// The warpgroup-MMA configurations (attention_wg.cuh), from kPrefillTcFirstWg on: wg<warpgroups>n<keys a tile>,
// 2 stages, one block an SM. Shared memory at DP = 128:
//   wg3n128  192 MMA rows, 128 keys a tile: 193 KiB
//   wg3n64   192 MMA rows, 64 keys a tile: 113 KiB (the default on sm_90a)
//   wg2n128  128 MMA rows, 128 keys a tile: 161 KiB
template <int DP>
struct TcPrefill<DP, 5> : WgConfig<DP, 3, 128, 2> {};
template <int DP>
struct TcPrefill<DP, 6> : WgConfig<DP, 3, 64, 2> {};
template <int DP>
struct TcPrefill<DP, 7> : WgConfig<DP, 2, 128, 2> {};
static_assert(sizeof(kPrefillTcNames) / sizeof(kPrefillTcNames[0]) == 8, "one TcPrefill a name");

// The kernel of a configuration: the warpgroup kernel for WgConfig, the mma.sync kernel for TcConfig.
template <class C>
constexpr auto KernelOf() {
  if constexpr (C::kWgmma) {
    return WgAttentionKernel<C>;
  } else {
    return TcAttentionKernel<C>;
  }
}

// Sets the kernel's shared memory limit once; returns the blocks of it that fit on one SM (0 on error).
template <class C>
int TcBlocksPerSm() {
  static const int blocks = [] {
    int n = 0;
    if (cudaFuncSetAttribute(KernelOf<C>(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(C::kSmemBytes)) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, KernelOf<C>(), C::kThreads, C::kSmemBytes) !=
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

struct TcDecodeFit {
  int warps;          // a block's, each with its own part of a row's keys
  int blocks_per_sm;  // 0 on error
};

template <int DP>
TcDecodeFit TcDecodeFitDims(int decode_config) {
  switch (decode_config) {
    case 0: return {1, TcBlocksPerSm<TcRowConfig<DP>>()};
    case 1: return {TcDecode<DP, 1>::WARPS, TcBlocksPerSm<TcDecode<DP, 1>>()};
    case 2: return {TcDecode<DP, 2>::WARPS, TcBlocksPerSm<TcDecode<DP, 2>>()};
    default: return {1, 0};
  }
}

// The warps a block and the blocks an SM of decode configuration `decode_config` (kDecodeTcNames).
inline TcDecodeFit TcDecodeFitOf(int decode_config, int head_dim) {
  return head_dim <= 64 ? TcDecodeFitDims<64>(decode_config) : TcDecodeFitDims<128>(decode_config);
}

template <class C>
cudaError_t LaunchTcWith(AttentionArgs<half_bits> a, cudaStream_t stream) {
  if (TcBlocksPerSm<C>() == 0) return cudaErrorInvalidConfiguration;
  const int group = a.Group();
  a.heads_per_tile = group < C::kBM ? group : C::kBM;
  a.head_chunks = (group + a.heads_per_tile - 1) / a.heads_per_tile;
  const unsigned head_blocks = static_cast<unsigned>(a.shape.num_kv_heads * a.head_chunks);
  dim3 grid(static_cast<unsigned>(a.shape.rows), head_blocks, static_cast<unsigned>(a.splits));
  if constexpr (C::kWgmma) {  // the tiles, then the blocks of stray rows
    const int64_t blocks = WgTileBlocks(a.shape, C::kBM / a.heads_per_tile, head_blocks) +
                           WgStrayBlocks<C>(a.shape, head_blocks);
    grid = dim3(static_cast<unsigned>(blocks), 1, 1);
  } else if (C::kTiles) {  // an upper bound of the tiles: each slot's rows, rounded up
    const int64_t rows_per_tile = C::kBM / a.heads_per_tile;
    const int64_t tiles = (a.shape.rows + rows_per_tile - 1) / rows_per_tile + a.shape.bsz;
    grid = dim3(static_cast<unsigned>(tiles * head_blocks), 1, 1);
  }
  KernelOf<C>()<<<grid, C::kThreads, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

// Prefill tiles, then the rows no tile owns (row tiles, unsplit; the warpgroup kernel's own blocks).
template <class Prefill, class Rows>
cudaError_t LaunchTcPrefill(const AttentionArgs<half_bits>& a, cudaStream_t stream) {
  const cudaError_t err = LaunchTcWith<Prefill>(a, stream);
  if (err != cudaSuccess || Prefill::kWgmma) return err;  // the warpgroup kernel takes its strays itself
  AttentionArgs<half_bits> strays = a;
  strays.strays_only = true;
  strays.splits = 1;
  return LaunchTcWith<Rows>(strays, stream);
}

template <int DP>
cudaError_t LaunchTcDims(const AttentionArgs<half_bits>& a, int prefill_config, int decode_config,
                         cudaStream_t stream) {
  using Rows = TcRowConfig<DP>;
  if (prefill_config == -1) {
    switch (decode_config) {
      case 0: return LaunchTcWith<Rows>(a, stream);
      case 1: return LaunchTcWith<TcDecode<DP, 1>>(a, stream);
      case 2: return LaunchTcWith<TcDecode<DP, 2>>(a, stream);
      default: return cudaErrorInvalidValue;
    }
  }
  switch (prefill_config) {
    case 0: return LaunchTcPrefill<TcPrefill<DP, 0>, Rows>(a, stream);
    case 1: return LaunchTcPrefill<TcPrefill<DP, 1>, Rows>(a, stream);
    case 2: return LaunchTcPrefill<TcPrefill<DP, 2>, Rows>(a, stream);
    case 3: return LaunchTcPrefill<TcPrefill<DP, 3>, Rows>(a, stream);
    case 4: return LaunchTcPrefill<TcPrefill<DP, 4>, Rows>(a, stream);
#ifdef FDO_WGMMA
    case 5: return LaunchTcPrefill<TcPrefill<DP, 5>, Rows>(a, stream);
    case 6: return LaunchTcPrefill<TcPrefill<DP, 6>, Rows>(a, stream);
    case 7: return LaunchTcPrefill<TcPrefill<DP, 7>, Rows>(a, stream);
#endif
    default: return cudaErrorInvalidValue;
  }
}

// head_dim % 8 == 0 and <= 128 (PlanAttention checks); 64 and 128 are the tile widths, smaller head
// dims are zero-padded. prefill_config: an index of kPrefillTcNames, or -1 for decode blocks only, of
// decode_config (an index of kDecodeTcNames).
inline cudaError_t LaunchTc(const AttentionArgs<half_bits>& a, int prefill_config, int decode_config,
                            cudaStream_t stream) {
  if (a.shape.head_dim <= 64) return LaunchTcDims<64>(a, prefill_config, decode_config, stream);
  return LaunchTcDims<128>(a, prefill_config, decode_config, stream);
}

}  // namespace fdo::attention
