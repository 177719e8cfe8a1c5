// fill_:        every element = value (bool, int32, int64, float16, float32), in place.
// fill_random_: x[i] = scale * u(seed, i) in float32 (include/random.h), rounded to float16 for float16
//               tensors; bit-identical on the CPU and CUDA, which makes the model's weights identical.
// The value is converted to the tensor's dtype once, on the host, and both kernels copy its bits.
#include <cmath>
#include <cstring>

#include "../include/dispatch.h"
#include "../include/random.h"

#ifdef PADDLE_WITH_CUDA
#include "init.h"
#endif

namespace fdo::init {

constexpr const char* kFill = "fill_";
constexpr const char* kFillRandom = "fill_random_";

template <typename T>
uint64_t BitsOf(T v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

// The bit pattern of `value` in the dtype of `x`, and the element size.
std::pair<uint64_t, int> Pattern(const paddle::Tensor& x, float value) {
  const char* op = kFill;
  const bool integral = x.dtype() == paddle::DataType::INT32 || x.dtype() == paddle::DataType::INT64;
  if (integral) {
    PD_CHECK(std::isfinite(value) && std::trunc(value) == value, op, ": value ", value,
             " is not an integer, but input 'x' is ", x.dtype());
  }
  switch (x.dtype()) {
    case paddle::DataType::BOOL:
      return {BitsOf<bool>(value != 0.0f), 1};
    case paddle::DataType::INT32:
      PD_CHECK(std::fabs(value) <= 2147483647.0f, op, ": value ", value, " does not fit in int32");
      return {BitsOf<int32_t>(static_cast<int32_t>(value)), 4};
    case paddle::DataType::INT64:
      PD_CHECK(std::fabs(value) < 9.2e18f, op, ": value ", value, " does not fit in int64");
      return {BitsOf<int64_t>(static_cast<int64_t>(value)), 8};
    case paddle::DataType::FLOAT16:
      return {BitsOf<half_bits>(FloatToHalf(value)), 2};
    case paddle::DataType::FLOAT32:
      return {BitsOf<float>(value), 4};
    default:
      PD_THROW(op, ": input 'x' must be bool, int32, int64, float16 or float32, got ", x.dtype());
  }
}

void Fill(paddle::Tensor& x, float value) {
  const auto [pattern, elem_bytes] = Pattern(x, value);
  const int64_t n = x.numel();
  if (RunsOnGpu(kFill, "x", x)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(kFill, LaunchFillPattern(x.data(), n, elem_bytes, pattern, x.stream()));
#endif
    return;
  }
  char* dst = static_cast<char*>(x.data());
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * elem_bytes, &pattern, static_cast<size_t>(elem_bytes));
}

void FillRandom(paddle::Tensor& x, int64_t seed, float scale) {
  const char* op = kFillRandom;
  const int64_t n = x.numel();
  const bool on_gpu = RunsOnGpu(op, "x", x);
  DispatchFloat(op, "x", x, [&](auto type) {
    using S = typename decltype(type)::type;
    S* dst = FloatData<S>(x);
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchFillRandom<S>(dst, n, static_cast<uint64_t>(seed), scale, x.stream()));
#endif
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = FromFloat<S>(scale * UniformSigned(static_cast<uint64_t>(seed), static_cast<uint64_t>(i)));
    }
  });
}

}  // namespace fdo::init

PD_BUILD_OP(fill_)
    .Inputs({"x"})
    .Outputs({"x_out"})
    .Attrs({"value: float"})
    .SetInplaceMap({{"x", "x_out"}})
    .SetKernelFn(PD_KERNEL(fdo::init::Fill));

PD_BUILD_OP(fill_random_)
    .Inputs({"x"})
    .Outputs({"x_out"})
    .Attrs({"seed: int64_t", "scale: float"})
    .SetInplaceMap({{"x", "x_out"}})
    .SetKernelFn(PD_KERNEL(fdo::init::FillRandom));
