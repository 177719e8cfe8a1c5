// The end of a decode block whose warps split its keys (TcConfig::kWarpKeys): the warps' partial softmax
// results (max, sum, unnormalised O of the same 16 MMA rows) merge through shared memory into the output,
// or into the block's split partial when the keys are also split across blocks.
#pragma once

#include "../include/tensor_core.cuh"
#include "attention_common.cuh"

namespace fdo::attention {

// o, row_max, row_sum: this thread's accumulators of MMA rows lane / 4 and lane / 4 + 8 (row_sum not yet
// summed over the quad). scratch: the K pipelines, free once every warp has left its key loop; warp w's O
// goes to its own pipeline's keys, at a row stride of DP + 8 floats (the quads' float2 stores hit 32 banks).
template <class C>
__device__ __forceinline__ void MergeWarpKeys(const AttentionArgs<half_bits>& a, const float (&o)[C::DP / 8][4],
                                              const float (&row_max)[2], const float (&row_sum)[2], float* scratch,
                                              const int* mma_pos, int64_t row_begin, int first_head) {
  constexpr int DP = C::DP, WARPS = C::WARPS, kRows = 16;
  constexpr int kStride = DP + 8;
  constexpr int kWarpFloats = C::kPipeElems / 2;
  static_assert(C::kWarpKeys && !C::kTiles && C::MT == 1, "one m-tile shared by every warp of a decode block");
  static_assert(kRows * kStride <= kWarpFloats, "a warp's O fits in its pipeline's keys");
  __shared__ float part_ml[WARPS][kRows][2];  // each warp's (max in log2 units, sum) of each MMA row
  __shared__ float weight[WARPS][kRows];      // each warp's factor in the merged row
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float* mine = scratch + warp * kWarpFloats;
  const int col = (lane & 3) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = tc::QuadSum(row_sum[h]);
    const int m = h * 8 + (lane >> 2);
#pragma unroll
    for (int i = 0; i < DP / 8; ++i) {
      *reinterpret_cast<float2*>(mine + m * kStride + i * 8 + col) = make_float2(o[i][2 * h], o[i][2 * h + 1]);
    }
    if ((lane & 3) == 0) {
      part_ml[warp][m][0] = row_max[h];
      part_ml[warp][m][1] = sum;
    }
  }
  __syncthreads();
  const int hp = a.heads_per_tile;
  const bool whole = a.splits == 1;
  if (threadIdx.x < kRows) {
    const int m = threadIdx.x;
    float top = -CUDART_INF_F;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      if (part_ml[w][m][1] > 0.0f) top = fmaxf(top, part_ml[w][m][0]);
    }
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      weight[w][m] = part_ml[w][m][1] > 0.0f ? exp2f(part_ml[w][m][0] - top) : 0.0f;
      total += weight[w][m] * part_ml[w][m][1];
    }
    const float inv = !whole ? 1.0f : total > 0.0f ? 1.0f / total : 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) weight[w][m] *= inv;
    if (!whole && mma_pos[m] >= 0) {
      const int64_t index = a.PartialIndex(row_begin + m / hp, first_head + m % hp, blockIdx.z);
      a.partial_ml[2 * index] = top;
      a.partial_ml[2 * index + 1] = total;
    }
  }
  __syncthreads();
  const int D = a.shape.head_dim;
  for (int i = threadIdx.x; i < kRows * DP / 2; i += C::kThreads) {
    const int m = i / (DP / 2);
    const int d = 2 * (i - m * (DP / 2));
    if (mma_pos[m] < 0 || d >= D) continue;
    float2 acc = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      const float2 v = *reinterpret_cast<const float2*>(scratch + w * kWarpFloats + m * kStride + d);
      acc.x = fmaf(weight[w][m], v.x, acc.x);
      acc.y = fmaf(weight[w][m], v.y, acc.y);
    }
    const int64_t row = row_begin + m / hp;
    const int head = first_head + m % hp;
    if (whole) {
      *reinterpret_cast<uint32_t*>(a.out + row * a.shape.QWidth() + static_cast<int64_t>(head) * D + d) =
          tc::PackHalf2(acc.x, acc.y);
    } else {
      *reinterpret_cast<float2*>(a.partial_out + a.PartialIndex(row, head, blockIdx.z) * D + d) = acc;
    }
  }
}

}  // namespace fdo::attention
