// CUDA launchers of fill_ and fill_random_ (defined in init.cu, called from init.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::init {

// Writes the low `elem_bytes` bytes of `pattern` into each of the n elements (elem_bytes: 1, 2, 4 or 8).
cudaError_t LaunchFillPattern(void* data, int64_t n, int elem_bytes, uint64_t pattern, cudaStream_t stream);

template <typename S>
cudaError_t LaunchFillRandom(S* data, int64_t n, uint64_t seed, float scale, cudaStream_t stream);

}  // namespace fdo::init
