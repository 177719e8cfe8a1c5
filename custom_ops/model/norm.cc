// fdo_rms_norm:  out[r][h] = (x[r][h] * inv_r) * weight[h],  inv_r = 1 / sqrt(sum_h x[r][h]^2 / H + eps)
// add_rms_norm:  residual_out = x + residual (stored in the dtype), out = fdo_rms_norm(residual_out)
// (fdo_rms_norm: paddle has an op named rms_norm, and paddle 2.6 skips a custom op of the same name.)
// All arithmetic in float32; float16 inputs are widened and the results rounded to nearest even.
#include <cmath>

#include "../include/dispatch.h"

#ifdef PADDLE_WITH_CUDA
#include "norm.h"
#endif

namespace fdo::norm {

constexpr const char* kRmsNorm = "fdo_rms_norm";
constexpr const char* kAddRmsNorm = "add_rms_norm";

template <typename S>
void RmsNormOnCpu(const S* x, const S* residual, const S* weight, int64_t rows, int64_t hidden, float eps, S* out,
                  S* residual_out) {
  for (int64_t r = 0; r < rows; ++r) {
    const S* in = x + r * hidden;
    if (residual != nullptr) {
      for (int64_t h = 0; h < hidden; ++h) {
        residual_out[r * hidden + h] = FromFloat<S>(ToFloat(in[h]) + ToFloat(residual[r * hidden + h]));
      }
      in = residual_out + r * hidden;
    }
    float sum_squares = 0.0f;
    for (int64_t h = 0; h < hidden; ++h) sum_squares += ToFloat(in[h]) * ToFloat(in[h]);
    const float inv = 1.0f / std::sqrt(sum_squares / static_cast<float>(hidden) + eps);
    for (int64_t h = 0; h < hidden; ++h) out[r * hidden + h] = FromFloat<S>(ToFloat(in[h]) * inv * ToFloat(weight[h]));
  }
}

void CheckNormInputs(const char* op, const paddle::Tensor& x, const paddle::Tensor& weight, float eps) {
  CheckShape(op, "x", x, {-1, -1});
  CheckShape(op, "weight", weight, {x.shape()[1]});
  CheckSameDtype(op, "weight", weight, "x", x);
  CheckSamePlace(op, "weight", weight, "x", x);
  PD_CHECK(eps >= 0.0f, op, ": attribute 'eps' must be >= 0, got ", eps);
}

// The shared body of both ops; residual and residual_out are null for fdo_rms_norm.
void RunRmsNorm(const char* op, const paddle::Tensor& x, const paddle::Tensor* residual, const paddle::Tensor& weight,
                float eps, paddle::Tensor& out, paddle::Tensor* residual_out) {
  const int64_t rows = x.shape()[0];
  const int64_t hidden = x.shape()[1];
  const bool on_gpu = RunsOnGpu(op, "x", x);
  DispatchFloat(op, "x", x, [&](auto type) {
    using S = typename decltype(type)::type;
    const S* res = residual ? FloatData<S>(*residual) : nullptr;
    S* res_out = residual_out ? FloatData<S>(*residual_out) : nullptr;
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchRmsNorm<S>(FloatData<S>(x), res, FloatData<S>(weight), rows, hidden, eps, FloatData<S>(out),
                                     res_out, x.stream()));
#endif
      return;
    }
    RmsNormOnCpu<S>(FloatData<S>(x), res, FloatData<S>(weight), rows, hidden, eps, FloatData<S>(out), res_out);
  });
}

std::vector<paddle::Tensor> RmsNorm(const paddle::Tensor& x, const paddle::Tensor& weight, float eps) {
  CheckNormInputs(kRmsNorm, x, weight, eps);
  paddle::Tensor out = EmptyOutput(x.shape(), x.dtype(), x.place());
  RunRmsNorm(kRmsNorm, x, nullptr, weight, eps, out, nullptr);
  return {out};
}

std::vector<paddle::Tensor> AddRmsNorm(const paddle::Tensor& x, const paddle::Tensor& residual,
                                       const paddle::Tensor& weight, float eps) {
  CheckNormInputs(kAddRmsNorm, x, weight, eps);
  CheckShape(kAddRmsNorm, "residual", residual, x.shape());
  CheckSameDtype(kAddRmsNorm, "residual", residual, "x", x);
  CheckSamePlace(kAddRmsNorm, "residual", residual, "x", x);
  paddle::Tensor out = EmptyOutput(x.shape(), x.dtype(), x.place());
  paddle::Tensor residual_out = EmptyOutput(x.shape(), x.dtype(), x.place());
  RunRmsNorm(kAddRmsNorm, x, &residual, weight, eps, out, &residual_out);
  return {out, residual_out};
}

}  // namespace fdo::norm

PD_BUILD_OP(fdo_rms_norm)
    .Inputs({"x", "weight"})
    .Outputs({"out"})
    .Attrs({"eps: float"})
    .SetKernelFn(PD_KERNEL(fdo::norm::RmsNorm));

PD_BUILD_OP(add_rms_norm)
    .Inputs({"x", "residual", "weight"})
    .Outputs({"out", "residual_out"})
    .Attrs({"eps: float"})
    .SetKernelFn(PD_KERNEL(fdo::norm::AddRmsNorm));
