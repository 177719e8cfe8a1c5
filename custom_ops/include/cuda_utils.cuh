// Device-side helpers of the CUDA kernels: float32/float16 loads and stores, warp and block
// reductions, launch sizes. No paddle headers: the .cu files compile on their own.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

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

// N consecutive elements of S as one load or store (16 bytes for N = 16 / sizeof(S); N = 1 for any
// alignment), widened to / rounded from float32.
template <typename S, int N>
struct Vec {
  static_assert(N == 1 || N * sizeof(S) == 16, "a Vec is one element or 16 bytes");
  using Raw = typename std::conditional<N == 1, S, uint4>::type;

  __device__ __forceinline__ static void Load(const S* p, float (&out)[N]) {
    if constexpr (N == 1) {
      out[0] = LoadFloat(*p);
    } else {
      const uint4 raw = *reinterpret_cast<const uint4*>(p);
      const S* e = reinterpret_cast<const S*>(&raw);
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = LoadFloat(e[i]);
    }
  }

  __device__ __forceinline__ static void Store(S* p, const float (&in)[N]) {
    if constexpr (N == 1) {
      *p = StoreFloat<S>(in[0]);
    } else {
      uint4 raw;
      S* e = reinterpret_cast<S*>(&raw);
#pragma unroll
      for (int i = 0; i < N; ++i) e[i] = StoreFloat<S>(in[i]);
      *reinterpret_cast<uint4*>(p) = raw;
    }
  }
};

// Elements of S in one 16-byte load.
template <typename S>
constexpr int kVec16 = static_cast<int>(16 / sizeof(S));

// True when every pointer is 16-byte aligned (the vectorized kernels' precondition besides the extents).
inline bool Aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Streaming multiprocessors of the current device (queried once per process).
inline int MultiprocessorCount() {
  static const int count = [] {
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      sms = 1;
    }
    return sms > 0 ? sms : 1;
  }();
  return count;
}

// Blocks for a grid-stride loop over n elements.
inline unsigned BlocksFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace fdo
