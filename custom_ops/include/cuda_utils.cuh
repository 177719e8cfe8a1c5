// Device-side helpers of the CUDA kernels: float32/float16 loads and stores, warp and block
// reductions, launch sizes. No paddle headers: the .cu files compile on their own.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fdo {

__device__ __forceinline__ float LoadFloat(float v) { return v; }
__device__ __forceinline__ float LoadFloat(uint16_t v) { return __half2float(__ushort_as_half(v)); }

template <typename S>
__device__ __forceinline__ S StoreFloat(float v);
template <>
__device__ __forceinline__ float StoreFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ uint16_t StoreFloat<uint16_t>(float v) {
  return __half_as_ushort(__float2half_rn(v));
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

// Sum over a block of at most 1024 threads; every thread gets the total. `scratch` holds 32 floats.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

// Blocks for a grid-stride loop over n elements.
inline unsigned BlocksFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace fdo
