// The seeded uniform numbers behind fill_random_, one formula for the CPU and CUDA kernels:
//   z = splitmix64(seed + i * 0x9E3779B97F4A7C15)        (uint64 arithmetic, wrapping)
//   u = ((z >> 40) - 2^23) * 2^-23                        (the top 24 bits, in [-1, 1), exact in float32)
// Every step is exact integer or float32 arithmetic, so the bits do not depend on the compiler.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fdo {

FDO_HOST_DEVICE uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

FDO_HOST_DEVICE float UniformSigned(uint64_t seed, uint64_t index) {
  const uint64_t z = SplitMix64(seed + index * 0x9E3779B97F4A7C15ull);
  const int32_t centered = static_cast<int32_t>(z >> 40) - (1 << 23);
  return static_cast<float>(centered) * 1.1920928955078125e-07f;  // 2^-23
}

}  // namespace fdo
