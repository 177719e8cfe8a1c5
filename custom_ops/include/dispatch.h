// Where a kernel runs (CPU or CUDA, by the place of the op's first tensor) and which float storage
// type it runs with.
#pragma once

#include <utility>

#include "checks.h"
#include "float_types.h"

#ifdef PADDLE_WITH_CUDA
#include "cuda_check.h"
#endif

namespace fdo {

// True when `t` is in GPU memory, so the op runs its CUDA kernel on t.stream(). A GPU tensor given
// to a library built without CUDA, or a tensor on any other place, is an error naming the op.
inline bool RunsOnGpu(const char* op, const char* input, const paddle::Tensor& t) {
  if (t.is_gpu()) {
#ifdef PADDLE_WITH_CUDA
    return true;
#else
    PD_THROW(op, ": input '", input, "' is on the GPU but the op library was built without CUDA");
#endif
  }
  PD_CHECK(t.is_cpu(), op, ": input '", input, "' must be on the CPU or the GPU, got a tensor on ",
           PlaceName(t));
  return false;
}

template <typename T>
struct Type {
  using type = T;
};

// Calls fn(Type<float>{}) or fn(Type<half_bits>{}) by the dtype of `t` (float32 or float16).
template <typename Fn>
void DispatchFloat(const char* op, const char* input, const paddle::Tensor& t, Fn&& fn) {
  switch (t.dtype()) {
    case paddle::DataType::FLOAT32:
      std::forward<Fn>(fn)(Type<float>{});
      break;
    case paddle::DataType::FLOAT16:
      std::forward<Fn>(fn)(Type<half_bits>{});
      break;
    default:
      PD_THROW(op, ": input '", input, "' must be float32 or float16, got ", t.dtype());
  }
}

// The element pointer of a float32 or float16 tensor as its storage type.
template <typename S>
S* FloatData(paddle::Tensor& t) {
  return static_cast<S*>(t.data());
}
template <typename S>
const S* FloatData(const paddle::Tensor& t) {
  return static_cast<const S*>(t.data());
}

}  // namespace fdo
