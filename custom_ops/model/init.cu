// CUDA kernels of fill_, fill_random_ and fill_random_block_: grid-stride loops (semantics in init.cc).
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

template <typename S>
__global__ void FillRandomBlockKernel(S* data, int64_t rows, int64_t cols, uint64_t seed, float scale,
                                      int64_t full_cols, int64_t row_offset, int64_t col_offset, int64_t col_start,
                                      int64_t col_count) {
  const int64_t n = rows * col_count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / col_count, c = i % col_count;
    const uint64_t index = static_cast<uint64_t>(row_offset + r) * static_cast<uint64_t>(full_cols) +
                           static_cast<uint64_t>(col_offset + c);
    data[r * cols + col_start + c] = StoreFloat<S>(scale * UniformSigned(seed, index));
  }
}

template <typename S>
cudaError_t LaunchFillRandomBlock(S* data, int64_t rows, int64_t cols, uint64_t seed, float scale, int64_t full_cols,
                                  int64_t row_offset, int64_t col_offset, int64_t col_start, int64_t col_count,
                                  cudaStream_t stream) {
  const int64_t n = rows * col_count;
  if (n == 0) return cudaSuccess;
  FillRandomBlockKernel<S><<<BlocksFor(n, 256), 256, 0, stream>>>(data, rows, cols, seed, scale, full_cols, row_offset,
                                                                  col_offset, col_start, col_count);
  return cudaGetLastError();
}

template cudaError_t LaunchFillRandomBlock<float>(float*, int64_t, int64_t, uint64_t, float, int64_t, int64_t, int64_t,
                                                  int64_t, int64_t, cudaStream_t);
template cudaError_t LaunchFillRandomBlock<uint16_t>(uint16_t*, int64_t, int64_t, uint64_t, float, int64_t, int64_t,
                                                     int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace fdo::init
