// Storage types of the op library's floating point tensors, and exact host-side conversions.
//
// float16 tensors are handled as their IEEE-754 bit patterns (uint16_t) and every kernel computes
// in float32. The conversions here round to nearest even, as CUDA's __float2half_rn and NumPy's
// astype(float16) do, so CPU and CUDA kernels produce the same bits. Plain C++: the CUDA sources
// include it too.
#pragma once

#include <cstdint>
#include <cstring>

namespace fdo {

using half_bits = uint16_t;

inline float HalfToFloat(half_bits h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float32.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &magnitude, sizeof(bits));
    bits |= sign;
  } else if (exponent == 31) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

inline half_bits FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t magnitude = x & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // inf stays inf, NaN becomes the quiet NaN
    return static_cast<half_bits>(sign | (magnitude > 0x7F800000u ? 0x7E00u : 0x7C00u));
  }
  if (magnitude >= 0x477FF000u) {  // 65520 and above round to inf
    return static_cast<half_bits>(sign | 0x7C00u);
  }
  if (magnitude >= 0x38800000u) {  // normal half: rebias the exponent, round the mantissa to 10 bits
    const uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);
    return static_cast<half_bits>(sign | ((rounded - 0x38000000u) >> 13));
  }
  if (magnitude <= 0x33000000u) {  // at most 2^-25: rounds to (signed) zero
    return static_cast<half_bits>(sign);
  }
  // Subnormal half: the value in units of 2^-24, rounded to nearest even. A carry into bit 10
  // yields the smallest normal half, which is the right encoding.
  const uint32_t shift = 126u - (magnitude >> 23);  // 14..24
  const uint32_t full_mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  uint32_t units = full_mantissa >> shift;
  const uint32_t remainder = full_mantissa & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (units & 1u))) ++units;
  return static_cast<half_bits>(sign | units);
}

inline float ToFloat(float v) { return v; }
inline float ToFloat(half_bits v) { return HalfToFloat(v); }

template <typename S>
S FromFloat(float v);
template <>
inline float FromFloat<float>(float v) {
  return v;
}
template <>
inline half_bits FromFloat<half_bits>(float v) {
  return FloatToHalf(v);
}

}  // namespace fdo
