// silu_mul's formula, one definition for activation.cc and activation.cu, and the CUDA launcher.
#pragma once

#include <math.h>

#include <cstdint>

#include "../include/host_device.h"

namespace fdo::activation {

// silu(g) * u = g / (1 + exp(-g)) * u, in float32.
FDO_HOST_DEVICE float GatedSilu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

}  // namespace fdo::activation

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::activation {

template <typename S>
cudaError_t LaunchSiluMul(const S* gate_up, int64_t rows, int64_t half_width, S* out, cudaStream_t stream);

}  // namespace fdo::activation
#endif
