// CUDA launchers of the norms (defined in norm.cu, called from norm.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::norm {

// residual == nullptr: out = fdo_rms_norm(x). Else residual_out = x + residual, out = fdo_rms_norm(residual_out).
template <typename S>
cudaError_t LaunchRmsNorm(const S* x, const S* residual, const S* weight, int64_t rows, int64_t hidden, float eps,
                          S* out, S* residual_out, cudaStream_t stream);

}  // namespace fdo::norm
