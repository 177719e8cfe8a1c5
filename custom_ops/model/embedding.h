// CUDA launcher of embedding (defined in embedding.cu, called from embedding.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::embedding {

template <typename S>
cudaError_t LaunchEmbedding(const int64_t* ids, const S* table, int64_t rows, int64_t vocab, int64_t hidden, S* out,
                            cudaStream_t stream);

}  // namespace fdo::embedding
