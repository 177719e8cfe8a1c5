// CUDA launchers of fill_, fill_random_ and fill_random_block_ (defined in init.cu, called from init.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::init {

// Writes the low `elem_bytes` bytes of `pattern` into each of the n elements (elem_bytes: 1, 2, 4 or 8).
cudaError_t LaunchFillPattern(void* data, int64_t n, int elem_bytes, uint64_t pattern, cudaStream_t stream);

template <typename S>
cudaError_t LaunchFillRandom(S* data, int64_t n, uint64_t seed, float scale, cudaStream_t stream);

// fill_random_block_'s columns [col_start, col_start + col_count) of each of the `rows` rows of a [rows, cols] x.
template <typename S>
cudaError_t LaunchFillRandomBlock(S* data, int64_t rows, int64_t cols, uint64_t seed, float scale, int64_t full_cols,
                                  int64_t row_offset, int64_t col_offset, int64_t col_start, int64_t col_count,
                                  cudaStream_t stream);

}  // namespace fdo::init
