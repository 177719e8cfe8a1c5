// CUDA kernels of fdo_rms_norm / add_rms_norm: one block per row. The vectorized kernel reads x (and the
// residual) once as 16-byte vectors into registers, writes residual_out, sums the squares of the stored
// (rounded) values, and writes out from the registers: every byte crosses HBM once. Rows too wide for
// the registers, or unaligned, take the element-wise kernel.
#include "../include/cuda_utils.cuh"
#include "norm.h"

namespace fdo::norm {

constexpr int kMaxThreads = 1024;

template <typename S, int N, int VPT>
__global__ void __launch_bounds__(kMaxThreads)
    RmsNormVecKernel(const S* x, const S* residual, const S* weight, int64_t hidden, float eps, S* out,
                     S* residual_out) {
  __shared__ float scratch[32];
  using V = Vec<S, N>;
  const int64_t base = blockIdx.x * hidden;
  const int64_t vectors = hidden / N;
  float v[VPT][N];
  float sum_squares = 0.0f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i >= vectors) continue;
    V::Load(x + base + i * N, v[k]);
    if (residual != nullptr) {
      float r[N];
      V::Load(residual + base + i * N, r);
#pragma unroll
      for (int e = 0; e < N; ++e) v[k][e] = LoadFloat(StoreFloat<S>(v[k][e] + r[e]));  // the stored value
      V::Store(residual_out + base + i * N, v[k]);
    }
#pragma unroll
    for (int e = 0; e < N; ++e) sum_squares += v[k][e] * v[k][e];
  }
  sum_squares = BlockSum(sum_squares, scratch);
  const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i >= vectors) continue;
    float w[N];
    V::Load(weight + i * N, w);
#pragma unroll
    for (int e = 0; e < N; ++e) v[k][e] = v[k][e] * inv * w[e];
    V::Store(out + base + i * N, v[k]);
  }
}

template <typename S>
__global__ void RmsNormKernel(const S* x, const S* residual, const S* weight, int64_t hidden, float eps, S* out,
                              S* residual_out) {
  __shared__ float scratch[32];
  const int64_t base = blockIdx.x * hidden;
  const S* in = x + base;
  if (residual != nullptr) {
    for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
      residual_out[base + h] = StoreFloat<S>(LoadFloat(x[base + h]) + LoadFloat(residual[base + h]));
    }
    in = residual_out + base;  // each thread reads back only what it wrote
  }
  float sum_squares = 0.0f;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    const float v = LoadFloat(in[h]);
    sum_squares += v * v;
  }
  sum_squares = BlockSum(sum_squares, scratch);
  const float inv = 1.0f / sqrtf(sum_squares / static_cast<float>(hidden) + eps);
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    out[base + h] = StoreFloat<S>(LoadFloat(in[h]) * inv * LoadFloat(weight[h]));
  }
}

template <typename S, int VPT>
void LaunchVec(const S* x, const S* residual, const S* weight, int64_t rows, int64_t hidden, float eps, S* out,
               S* residual_out, int threads, cudaStream_t stream) {
  RmsNormVecKernel<S, kVec16<S>, VPT><<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, residual, weight, hidden,
                                                                                          eps, out, residual_out);
}

template <typename S>
cudaError_t LaunchRmsNorm(const S* x, const S* residual, const S* weight, int64_t rows, int64_t hidden, float eps,
                          S* out, S* residual_out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int kN = kVec16<S>;
  const int64_t vectors = hidden / kN;
  const bool aligned = hidden % kN == 0 && Aligned16({x, residual, weight, out, residual_out});
  if (!aligned || vectors > 4 * kMaxThreads) {
    RmsNormKernel<S><<<static_cast<unsigned>(rows), 256, 0, stream>>>(x, residual, weight, hidden, eps, out,
                                                                      residual_out);
    return cudaGetLastError();
  }
  // As few vectors per thread as fit in one block, and at least a warp.
  const int vpt = vectors <= kMaxThreads ? 1 : vectors <= 2 * kMaxThreads ? 2 : 4;
  const int64_t per_thread = (vectors + vpt - 1) / vpt;
  const int threads = static_cast<int>((per_thread + 31) / 32 * 32);
  if (vpt == 1) LaunchVec<S, 1>(x, residual, weight, rows, hidden, eps, out, residual_out, threads, stream);
  if (vpt == 2) LaunchVec<S, 2>(x, residual, weight, rows, hidden, eps, out, residual_out, threads, stream);
  if (vpt == 4) LaunchVec<S, 4>(x, residual, weight, rows, hidden, eps, out, residual_out, threads, stream);
  return cudaGetLastError();
}

template cudaError_t LaunchRmsNorm<float>(const float*, const float*, const float*, int64_t, int64_t, float, float*,
                                          float*, cudaStream_t);
template cudaError_t LaunchRmsNorm<uint16_t>(const uint16_t*, const uint16_t*, const uint16_t*, int64_t, int64_t,
                                             float, uint16_t*, uint16_t*, cudaStream_t);

}  // namespace fdo::norm
