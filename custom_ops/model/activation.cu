// CUDA kernel of silu_mul: a grid-stride loop over the output elements.
#include "../include/cuda_utils.cuh"
#include "activation.h"

namespace fdo::activation {

template <typename S>
__global__ void SiluMulKernel(const S* gate_up, int64_t rows, int64_t half_width, S* out) {
  const int64_t n = rows * half_width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / half_width;
    const int64_t f = i - t * half_width;
    const float g = LoadFloat(gate_up[t * 2 * half_width + f]);
    const float u = LoadFloat(gate_up[t * 2 * half_width + half_width + f]);
    out[i] = StoreFloat<S>(GatedSilu(g, u));
  }
}

template <typename S>
cudaError_t LaunchSiluMul(const S* gate_up, int64_t rows, int64_t half_width, S* out, cudaStream_t stream) {
  const int64_t n = rows * half_width;
  if (n == 0) return cudaSuccess;
  SiluMulKernel<S><<<BlocksFor(n, 256), 256, 0, stream>>>(gate_up, rows, half_width, out);
  return cudaGetLastError();
}

template cudaError_t LaunchSiluMul<float>(const float*, int64_t, int64_t, float*, cudaStream_t);
template cudaError_t LaunchSiluMul<uint16_t>(const uint16_t*, int64_t, int64_t, uint16_t*, cudaStream_t);

}  // namespace fdo::activation
