// Turns a failed CUDA launch or call into an exception naming the op (only built with CUDA).
#pragma once

#include <cuda_runtime.h>

#include "paddle/extension.h"

namespace fdo {

inline void CheckCuda(const char* op, cudaError_t err) {
  PD_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
}

}  // namespace fdo
