// CUDA kernels of fill_ and fill_random_: grid-stride loops (semantics in init.cc).
#include "../include/cuda_utils.cuh"
#include "../include/random.h"
#include "init.h"

namespace fdo::init {

template <typename T>
__global__ void FillKernel(T* data, int64_t n, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    data[i] = value;
  }
}

cudaError_t LaunchFillPattern(void* data, int64_t n, int elem_bytes, uint64_t pattern, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = BlocksFor(n, 256);
  switch (elem_bytes) {
    case 1:
      FillKernel<uint8_t><<<blocks, 256, 0, stream>>>(static_cast<uint8_t*>(data), n, static_cast<uint8_t>(pattern));
      break;
    case 2:
      FillKernel<uint16_t><<<blocks, 256, 0, stream>>>(static_cast<uint16_t*>(data), n,
                                                       static_cast<uint16_t>(pattern));
      break;
    case 4:
      FillKernel<uint32_t><<<blocks, 256, 0, stream>>>(static_cast<uint32_t*>(data), n,
                                                       static_cast<uint32_t>(pattern));
      break;
    case 8:
      FillKernel<uint64_t><<<blocks, 256, 0, stream>>>(static_cast<uint64_t*>(data), n, pattern);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename S>
__global__ void FillRandomKernel(S* data, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    data[i] = StoreFloat<S>(scale * UniformSigned(seed, static_cast<uint64_t>(i)));
  }
}

template <typename S>
cudaError_t LaunchFillRandom(S* data, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  FillRandomKernel<S><<<BlocksFor(n, 256), 256, 0, stream>>>(data, n, seed, scale);
  return cudaGetLastError();
}

template cudaError_t LaunchFillRandom<float>(float*, int64_t, uint64_t, float, cudaStream_t);
template cudaError_t LaunchFillRandom<uint16_t>(uint16_t*, int64_t, uint64_t, float, cudaStream_t);

}  // namespace fdo::init
