// CUDA kernel of fdo_rms_norm / add_rms_norm: one block per row, a block sum of squares.
#include "../include/cuda_utils.cuh"
#include "norm.h"

namespace fdo::norm {

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

template <typename S>
cudaError_t LaunchRmsNorm(const S* x, const S* residual, const S* weight, int64_t rows, int64_t hidden, float eps,
                          S* out, S* residual_out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<S><<<static_cast<unsigned>(rows), 256, 0, stream>>>(x, residual, weight, hidden, eps, out,
                                                                    residual_out);
  return cudaGetLastError();
}

template cudaError_t LaunchRmsNorm<float>(const float*, const float*, const float*, int64_t, int64_t, float, float*,
                                          float*, cudaStream_t);
template cudaError_t LaunchRmsNorm<uint16_t>(const uint16_t*, const uint16_t*, const uint16_t*, int64_t, int64_t,
                                             float, uint16_t*, uint16_t*, cudaStream_t);

}  // namespace fdo::norm
