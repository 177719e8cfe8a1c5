// CUDA launcher of silu_mul (defined in activation.cu, called from activation.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::activation {

template <typename S>
cudaError_t LaunchSiluMul(const S* gate_up, int64_t rows, int64_t half_width, S* out, cudaStream_t stream);

}  // namespace fdo::activation
