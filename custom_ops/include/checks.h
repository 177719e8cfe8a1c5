// Input checks shared by every op: each failure is a PD_CHECK whose message names the op and the
// input ("embedding: input 'ids' must be int64, got int32"); it reaches Python as
// an exception.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "paddle/extension.h"

namespace fdo {

inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

inline const char* PlaceName(const paddle::Tensor& t) {
  if (t.is_gpu_pinned()) return "pinned host memory";
  if (t.is_gpu()) return "the GPU";
  if (t.is_cpu()) return "the CPU";
  return "an unsupported device";
}

inline void CheckDtype(const char* op, const char* input, const paddle::Tensor& t, paddle::DataType want) {
  PD_CHECK(t.dtype() == want, op, ": input '", input, "' must be ", want, ", got ", t.dtype());
}

inline void CheckSameDtype(const char* op, const char* input, const paddle::Tensor& t, const char* ref_name,
                           const paddle::Tensor& ref) {
  PD_CHECK(t.dtype() == ref.dtype(), op, ": input '", input, "' must have the dtype of '", ref_name, "' (",
           ref.dtype(), "), got ", t.dtype());
}

// `want` lists the expected extent of each dimension; -1 accepts any extent.
inline void CheckShape(const char* op, const char* input, const paddle::Tensor& t,
                       const std::vector<int64_t>& want) {
  const std::vector<int64_t> shape = t.shape();
  bool ok = shape.size() == want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || shape[i] == want[i];
  PD_CHECK(ok, op, ": input '", input, "' must have shape ", ShapeString(want), " (-1: any), got ",
           ShapeString(shape));
}

inline void CheckNumel(const char* op, const char* input, const paddle::Tensor& t, int64_t want) {
  PD_CHECK(t.numel() == want, op, ": input '", input, "' must have ", want, " elements, got ", t.numel(),
           " (shape ", ShapeString(t.shape()), ")");
}

// Kernels read and write one place: `t` must sit where `ref` sits (both CPU or both GPU).
inline void CheckSamePlace(const char* op, const char* input, const paddle::Tensor& t, const char* ref_name,
                           const paddle::Tensor& ref) {
  const bool same = (t.is_gpu() && ref.is_gpu()) || (t.is_cpu() && ref.is_cpu());
  PD_CHECK(same, op, ": input '", input, "' is on ", PlaceName(t), " but '", ref_name, "' is on ",
           PlaceName(ref));
}

// An input's dtype, shape and place in one check: `dtype`, `shape` (-1: any extent), where `ref` sits.
inline void CheckInput(const char* op, const char* input, const paddle::Tensor& t, paddle::DataType dtype,
                       const std::vector<int64_t>& shape, const char* ref_name, const paddle::Tensor& ref) {
  CheckDtype(op, input, t, dtype);
  CheckShape(op, input, t, shape);
  CheckSamePlace(op, input, t, ref_name, ref);
}

// For ops that read or write through the host pointer: CPU memory or pinned host memory.
inline void CheckHostAccessible(const char* op, const char* input, const paddle::Tensor& t) {
  PD_CHECK(t.is_cpu() || t.is_gpu_pinned(), op, ": input '", input,
           "' must be a CPU or pinned host tensor, got a tensor on ", PlaceName(t));
}

inline void CheckPositive(const char* op, const char* attr, int64_t value) {
  PD_CHECK(value > 0, op, ": attribute '", attr, "' must be positive, got ", value);
}

// paddle::empty for an op's output. paddle::empty of a zero-size shape has no allocation, which paddle 2.6
// rejects as an op output; such an output is allocated with one leading row and reshaped to size 0
// instead (paddle logs a deprecation warning for that, once per process).
inline paddle::Tensor EmptyOutput(const std::vector<int64_t>& shape, paddle::DataType dtype,
                                  const paddle::Place& place) {
  paddle::Tensor out = paddle::empty(shape, dtype, place);
  if (out.initialized() || shape.empty()) return out;
  std::vector<int64_t> one_row = shape;
  one_row[0] = 1;
  out = paddle::empty(one_row, dtype, place);
  out.reshape(shape);
  return out;
}

}  // namespace fdo
