// The decode GEMM kernel (sm_90a): y[M,N] = x[M,K] @ w[K,N] for a few rows (M <= 128), float16 with float32
// accumulation, streaming the weights once at close to HBM bandwidth. The product is computed transposed,
// y^T = w^T x^T, so that the weights are wgmma's A operand (64 output columns an MMA, read M-major straight
// from w's [K,N] rows) and the rows are its N (rounded up to NB): no MMA work is spent on padding to 64
// rows. A block owns TN output columns over the whole of K: a producer warp streams 64-row chunks of w
// and x into STAGES shared-memory stages with the TMA, WGS consumer warpgroups multiply them, each its MT
// 64-column tiles, and the tile goes out through shared memory in 16-byte row stores. With `glu` the tile holds
// TN / 2 gate and the matching TN / 2 up columns and the epilogue writes silu(gate) * up, each rounded to
// float16 first as silu_mul's inputs are.
#pragma once

#include <cuda.h>

#include "../include/cuda_utils.cuh"
#include "../include/tensor_core.cuh"
#include "../include/wgmma.cuh"
#include "activation.h"

namespace fdo::gemm {

constexpr int kDecodeKChunk = 64;  // K rows of w a stage holds (a 128-byte swizzled row of 64 columns each)

struct DecodeGemmArgs {
  uint16_t* y;  // [m, n], or [m, n / 2] with glu
  int m, n, k;
  int glu;
};

// NB: rows rounded up (the MMA's N: 64 or 128, wgmma.cuh's shapes); MT: 64-column MMA tiles a consumer warpgroup; WGS:
// consumer warpgroups; STAGES: chunks in flight.
template <int NB_, int MT_, int WGS_, int STAGES_>
struct DecodeGemmConfig {
  static constexpr int NB = NB_, MT = MT_, WGS = WGS_, STAGES = STAGES_;
  static constexpr int kThreads = 128 * WGS + 32;  // the consumers, then the producer warp
  static constexpr int TN = 64 * MT * WGS;
  static constexpr int kWBytes = kDecodeKChunk * TN * 2;  // TN / 64 slabs of 64 K rows x 128 bytes
  static constexpr int kXBytes = NB * kDecodeKChunk * 2;  // one slab of NB rows
  static constexpr int kStageBytes = kWBytes + kXBytes;
  static constexpr int kTileBytes = NB * (TN + 4) * 4;  // the float32 output tile, [row][column], padded
  static constexpr int kPipeBytes = STAGES * kStageBytes;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kPipeBytes > kTileBytes ? kPipeBytes : kTileBytes) + 1024;
};

#if defined(FDO_WGMMA) && defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "FDO_WGMMA needs an sm_90a build (-gencode=arch=compute_90a,code=sm_90a)"
#endif

template <class C>
__global__ void __launch_bounds__(C::kThreads) DecodeGemmKernel(const __grid_constant__ CUtensorMap w_map,
                                                                const __grid_constant__ CUtensorMap x_map,
                                                                DecodeGemmArgs a) {
#ifdef FDO_WGMMA
  constexpr int NB = C::NB, MT = C::MT, WGS = C::WGS, STAGES = C::STAGES, TN = C::TN, kThreads = C::kThreads;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int tile = blockIdx.x;
  const int chunks = a.k / kDecodeKChunk;
  const uint32_t base = tc::SharedAddress(smem);
  const uint32_t full0 = tc::SharedAddress(full), empty0 = tc::SharedAddress(empty);
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      wg::BarrierInit(full0 + 8 * s, 1);
      wg::BarrierInit(empty0 + 8 * s, 128 * WGS);
    }
    wg::FenceBarrierInit();
  }
  __syncthreads();

  if (warp == 4 * WGS) {  // the producer
    if (lane == 0) {
      // The first w column of slab j of this tile: gate columns, then (glu) the matching up columns.
      auto slab_column = [&](int j) {
        constexpr int kSlabs = TN / 64;
        if (!a.glu) return tile * TN + 64 * j;
        return j < kSlabs / 2 ? tile * (TN / 2) + 64 * j : a.n / 2 + tile * (TN / 2) + 64 * (j - kSlabs / 2);
      };
      auto load_chunk = [&](int c) {  // K rows 64 c .. 64 c + 63: TN / 64 slabs of w, then x
        const int s = c % STAGES;
        const uint32_t bar = full0 + 8 * s;
        const int k0 = c * kDecodeKChunk;
        wg::BarrierExpectBytes(bar, C::kStageBytes);
        for (int j = 0; j < TN / 64; ++j) {
          wg::CopyTensor2d(base + s * C::kStageBytes + j * kDecodeKChunk * 128, &w_map, slab_column(j), k0, bar);
        }
        wg::CopyTensor2d(base + s * C::kStageBytes + C::kWBytes, &x_map, k0, 0, bar);
      };
      for (int c = 0; c < chunks; ++c) {
        if (c >= STAGES) wg::BarrierWait(empty0 + 8 * (c % STAGES), ((c / STAGES) - 1) & 1);
        load_chunk(c);
      }
    }
  } else {  // a consumer warpgroup: MMA tiles MT * group .. MT * group + MT - 1
    const int group = warp >> 2;
    float acc[MT][NB / 2];
#pragma unroll
    for (int j = 0; j < MT; ++j) {
#pragma unroll
      for (int i = 0; i < NB / 2; ++i) acc[j][i] = 0.0f;
    }
    for (int c = 0; c < chunks; ++c) {
      const int s = c % STAGES;
      wg::BarrierWait(full0 + 8 * s, (c / STAGES) & 1);
      const uint32_t st = base + s * C::kStageBytes;
      wg::Fence();
#pragma unroll
      for (int kk = 0; kk < kDecodeKChunk / 16; ++kk) {
        // x (B, K-major): 16 K columns are 32 bytes along its 128-byte rows; w (A, M-major): 16 K rows are 2 KiB.
        const uint64_t b = wg::Descriptor(st + C::kWBytes + kk * 32, 16, 1024);
#pragma unroll
        for (int j = 0; j < MT; ++j) {
          const uint32_t slab = st + (group * MT + j) * kDecodeKChunk * 128;
          wg::Mma<NB>::template SS<0, 1>(acc[j], wg::Descriptor(slab + kk * 2048, kDecodeKChunk * 128, 1024), b, 1);
        }
      }
      wg::Commit();
      wg::Wait<1>();
      if (c > 0) wg::BarrierArrive(empty0 + 8 * ((c - 1) % STAGES));  // chunk c - 1's MMAs have finished
    }
    wg::Wait<0>();
    __syncthreads();  // every consumer is done with the stages: the output tile takes their place
    // The tile as [row][column]; accumulator element (r, c) of MMA tile j is output column
    // 64 (group MT + j) + r of row c (wgmma.cuh gives the register layout).
    float* red = reinterpret_cast<float*>(smem);
    const int r0 = 16 * (warp & 3) + (lane >> 2), c0 = 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < MT; ++j) {
#pragma unroll
      for (int i = 0; i < NB / 2; ++i) {
        const int r = r0 + 8 * ((i >> 1) & 1), c = 8 * (i >> 2) + c0 + (i & 1);
        red[c * (TN + 4) + 64 * (group * MT + j) + r] = acc[j][i];
      }
    }
  }
  if (warp == 4 * WGS) __syncthreads();  // the producer's side of the consumers' barrier above

  __syncthreads();
  // The tile's rows, 8 columns (glu: 8 gate and the matching 8 up columns) a thread.
  const float* red = reinterpret_cast<const float*>(smem);
  const int rows = min(NB, a.m);
  const int groups = a.glu ? TN / 16 : TN / 8;
  const int half = a.n / 2;
  for (int i = tid; i < rows * groups; i += kThreads) {
    const int row = i / groups, g = i % groups;
    const float* part = red + row * (TN + 4);
    float v[8], u[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = part[8 * g + e];
      u[e] = a.glu ? part[TN / 2 + 8 * g + e] : 0.0f;
    }
    uint32_t out[4];
    if (a.glu) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = activation::GatedSilu(LoadFloat(StoreFloat<uint16_t>(v[e])), LoadFloat(StoreFloat<uint16_t>(u[e])));
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) out[e] = tc::PackHalf2(v[2 * e], v[2 * e + 1]);
    uint16_t* dst = a.glu ? a.y + static_cast<int64_t>(row) * half + tile * (TN / 2) + 8 * g
                          : a.y + static_cast<int64_t>(row) * a.n + tile * TN + 8 * g;
    *reinterpret_cast<uint4*>(dst) = make_uint4(out[0], out[1], out[2], out[3]);
  }
#endif
}

}  // namespace fdo::gemm
