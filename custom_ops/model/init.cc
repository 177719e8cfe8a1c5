// fill_:        every element = value (bool, int32, int64, float16, float32), in place.
// fill_random_: x[i] = scale * u(seed, i) in float32 (include/random.h), rounded to float16 for float16
//               tensors; bit-identical on the CPU and CUDA, which makes the model's weights identical.
// fill_random_block_: a block of columns of one shard of a bigger [rows, full_cols] tensor filled by fill_random_:
//               x[r][col_start + c] = scale * u(seed, (row_offset + r) * full_cols + col_offset + c) for
//               c < col_count, the rest of x untouched. A tensor-parallel rank builds its shard of the same
//               seeded weights with it (a column-parallel shard in two or three blocks, a row-parallel one in one).
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

void FillRandomBlock(paddle::Tensor& x, int64_t seed, float scale, int64_t full_cols, int64_t row_offset,
                     int64_t col_offset, int64_t col_start, int64_t col_count) {
  const char* op = "fill_random_block_";
  PD_CHECK(x.shape().size() == 2, op, ": input 'x' must be 2-D [rows, cols], got ", x.shape().size(), " dimensions");
  const int64_t rows = x.shape()[0], cols = x.shape()[1];
  PD_CHECK(row_offset >= 0 && col_offset >= 0 && col_start >= 0 && col_count >= 0, op,
           ": offsets and counts must be >= 0");
  PD_CHECK(col_start + col_count <= cols, op, ": columns [", col_start, ", ", col_start + col_count,
           ") are past the ", cols, " columns of 'x'");
  PD_CHECK(col_offset + col_count <= full_cols, op, ": columns [", col_offset, ", ", col_offset + col_count,
           ") are past full_cols ", full_cols);
  const bool on_gpu = RunsOnGpu(op, "x", x);
  DispatchFloat(op, "x", x, [&](auto type) {
    using S = typename decltype(type)::type;
    S* dst = FloatData<S>(x);
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchFillRandomBlock<S>(dst, rows, cols, static_cast<uint64_t>(seed), scale, full_cols,
                                             row_offset, col_offset, col_start, col_count, x.stream()));
#endif
      return;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const uint64_t base = static_cast<uint64_t>(row_offset + r) * static_cast<uint64_t>(full_cols) +
                            static_cast<uint64_t>(col_offset);
      for (int64_t c = 0; c < col_count; ++c) {
        dst[r * cols + col_start + c] =
            FromFloat<S>(scale * UniformSigned(static_cast<uint64_t>(seed), base + static_cast<uint64_t>(c)));
      }
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

PD_BUILD_OP(fill_random_block_)
    .Inputs({"x"})
    .Outputs({"x_out"})
    .Attrs({"seed: int64_t", "scale: float", "full_cols: int64_t", "row_offset: int64_t", "col_offset: int64_t",
            "col_start: int64_t", "col_count: int64_t"})
    .SetInplaceMap({{"x", "x_out"}})
    .SetKernelFn(PD_KERNEL(fdo::init::FillRandomBlock));
