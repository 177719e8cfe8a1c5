// CUDA kernel of silu_mul: a grid-stride loop over N output elements at a time (16-byte loads of gate
// and up and a 16-byte store when the row width and the pointers allow, else N = 1).
#include "../include/cuda_utils.cuh"
#include "activation.h"

namespace fdo::activation {

template <typename S, int N>
__global__ void SiluMulKernel(const S* gate_up, int64_t rows, int64_t half_width, S* out) {
  using V = Vec<S, N>;
  const int64_t per_row = half_width / N;
  const int64_t n = rows * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_row;
    const int64_t f = (i - t * per_row) * N;
    float g[N], u[N];
    V::Load(gate_up + t * 2 * half_width + f, g);
    V::Load(gate_up + t * 2 * half_width + half_width + f, u);
#pragma unroll
    for (int e = 0; e < N; ++e) g[e] = GatedSilu(g[e], u[e]);
    V::Store(out + t * half_width + f, g);
  }
}

template <typename S>
cudaError_t LaunchSiluMul(const S* gate_up, int64_t rows, int64_t half_width, S* out, cudaStream_t stream) {
  const int64_t n = rows * half_width;
  if (n == 0) return cudaSuccess;
  constexpr int kN = kVec16<S>;
  if (half_width % kN == 0 && Aligned16({gate_up, out})) {
    SiluMulKernel<S, kN><<<BlocksFor(n / kN, 256), 256, 0, stream>>>(gate_up, rows, half_width, out);
  } else {
    SiluMulKernel<S, 1><<<BlocksFor(n, 256), 256, 0, stream>>>(gate_up, rows, half_width, out);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchSiluMul<float>(const float*, int64_t, int64_t, float*, cudaStream_t);
template cudaError_t LaunchSiluMul<uint16_t>(const uint16_t*, int64_t, int64_t, uint16_t*, cudaStream_t);

}  // namespace fdo::activation
