// CUDA kernel of embedding: one block per row.
#include "../include/cuda_utils.cuh"
#include "embedding.h"

namespace fdo::embedding {

template <typename S>
__global__ void EmbeddingKernel(const int64_t* ids, const S* table, int64_t vocab, int64_t hidden, S* out) {
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t];
  const bool valid = id >= 0 && id < vocab;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    out[t * hidden + h] = valid ? table[id * hidden + h] : S{0};
  }
}

template <typename S>
cudaError_t LaunchEmbedding(const int64_t* ids, const S* table, int64_t rows, int64_t vocab, int64_t hidden, S* out,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  EmbeddingKernel<S><<<static_cast<unsigned>(rows), 256, 0, stream>>>(ids, table, vocab, hidden, out);
  return cudaGetLastError();
}

template cudaError_t LaunchEmbedding<float>(const int64_t*, const float*, int64_t, int64_t, int64_t, float*,
                                            cudaStream_t);
template cudaError_t LaunchEmbedding<uint16_t>(const int64_t*, const uint16_t*, int64_t, int64_t, int64_t, uint16_t*,
                                               cudaStream_t);

}  // namespace fdo::embedding
