// CUDA kernels of write_kv_cache (one block per row) and attention (one block per row and query head;
// each warp runs an online softmax over every 4th cache position, then the warps are merged).
#include <math_constants.h>

#include "../include/cuda_utils.cuh"
#include "attention.h"

namespace fdo::attention {

constexpr int kWarps = 4;
constexpr int kPerLane = kMaxHeadDimCuda / 32;

template <typename S>
__global__ void WriteKvCacheKernel(const S* qkv, S* key_cache, S* value_cache, const int32_t* batch,
                                   const int32_t* cu, const int32_t* dec, AttentionShape s) {
  const int64_t t = blockIdx.x;
  const int64_t p = s.Position(t, batch, cu, dec);
  if (p < 0) return;
  const int64_t kv_width = s.KvWidth();
  const S* k = qkv + t * s.QkvWidth() + s.QWidth();
  const int64_t base = s.CacheOffset(batch[t], p, 0);
  for (int64_t i = threadIdx.x; i < kv_width; i += blockDim.x) {
    key_cache[base + i] = k[i];
    value_cache[base + i] = k[kv_width + i];
  }
}

template <typename S>
cudaError_t LaunchWriteKvCache(const S* qkv, S* key_cache, S* value_cache, const int32_t* batch_id_per_token,
                               const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                               cudaStream_t stream) {
  if (shape.rows == 0) return cudaSuccess;
  WriteKvCacheKernel<S><<<static_cast<unsigned>(shape.rows), 256, 0, stream>>>(
      qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q, seq_lens_decoder, shape);
  return cudaGetLastError();
}

template <typename S>
__global__ void __launch_bounds__(kWarps * 32)
    AttentionKernel(const S* qkv, const S* key_cache, const S* value_cache, const int32_t* batch, const int32_t* cu,
                    const int32_t* dec, AttentionShape s, float scale, S* out) {
  __shared__ float warp_max[kWarps];
  __shared__ float warp_total[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDimCuda];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int D = s.head_dim;
  S* out_row = out + (t * s.num_q_heads + h) * D;
  const int64_t p = s.Position(t, batch, cu, dec);
  if (p < 0) {
    for (int d = threadIdx.x; d < D; d += blockDim.x) out_row[d] = StoreFloat<S>(0.0f);
    return;
  }
  const int64_t b = batch[t];
  const int kv_head = h / (s.num_q_heads / s.num_kv_heads);
  const S* q = qkv + t * s.QkvWidth() + static_cast<int64_t>(h) * D;
  float q_reg[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int d = lane + 32 * k;
    q_reg[k] = d < D ? LoadFloat(q[d]) : 0.0f;
    acc[k] = 0.0f;
  }
  float running_max = -CUDART_INF_F;
  float total = 0.0f;
  for (int64_t j = warp; j <= p; j += kWarps) {
    const S* key = key_cache + s.CacheOffset(b, j, kv_head);
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int d = lane + 32 * k;
      if (d < D) dot += q_reg[k] * LoadFloat(key[d]);
    }
    const float score = WarpSum(dot) * scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = expf(running_max - new_max);
    const float weight = expf(score - new_max);
    total = total * correction + weight;
    const S* value = value_cache + s.CacheOffset(b, j, kv_head);
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int d = lane + 32 * k;
      if (d < D) acc[k] = acc[k] * correction + weight * LoadFloat(value[d]);
    }
    running_max = new_max;
  }
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_total[warp] = total;
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int d = lane + 32 * k;
    if (d < D) warp_acc[warp][d] = acc[k];
  }
  __syncthreads();
  float block_max = -CUDART_INF_F;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max[w]);
  float block_total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    if (warp_max[w] != -CUDART_INF_F) block_total += warp_total[w] * expf(warp_max[w] - block_max);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (warp_max[w] != -CUDART_INF_F) o += warp_acc[w][d] * expf(warp_max[w] - block_max);
    }
    out_row[d] = StoreFloat<S>(o / block_total);
  }
}

template <typename S>
cudaError_t LaunchAttention(const S* qkv, const S* key_cache, const S* value_cache, const int32_t* batch_id_per_token,
                            const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                            float scale, S* out, cudaStream_t stream) {
  if (shape.rows == 0) return cudaSuccess;
  if (shape.head_dim > kMaxHeadDimCuda) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(shape.rows), static_cast<unsigned>(shape.num_q_heads));
  AttentionKernel<S><<<grid, kWarps * 32, 0, stream>>>(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q,
                                                       seq_lens_decoder, shape, scale, out);
  return cudaGetLastError();
}

template cudaError_t LaunchWriteKvCache<float>(const float*, float*, float*, const int32_t*, const int32_t*,
                                               const int32_t*, AttentionShape, cudaStream_t);
template cudaError_t LaunchWriteKvCache<uint16_t>(const uint16_t*, uint16_t*, uint16_t*, const int32_t*,
                                                  const int32_t*, const int32_t*, AttentionShape, cudaStream_t);
template cudaError_t LaunchAttention<float>(const float*, const float*, const float*, const int32_t*, const int32_t*,
                                            const int32_t*, AttentionShape, float, float*, cudaStream_t);
template cudaError_t LaunchAttention<uint16_t>(const uint16_t*, const uint16_t*, const uint16_t*, const int32_t*,
                                               const int32_t*, const int32_t*, AttentionShape, float, uint16_t*,
                                               cudaStream_t);

}  // namespace fdo::attention
