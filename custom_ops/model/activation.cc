// silu_mul: out[t][f] = silu(gate_up[t][f]) * gate_up[t][F + f],  silu(g) = g / (1 + exp(-g)), in float32.
#include "../include/dispatch.h"
#include "activation.h"

namespace fdo::activation {

constexpr const char* kSiluMul = "silu_mul";

std::vector<paddle::Tensor> SiluMul(const paddle::Tensor& gate_up) {
  const char* op = kSiluMul;
  CheckShape(op, "gate_up", gate_up, {-1, -1});
  const int64_t rows = gate_up.shape()[0];
  const int64_t width = gate_up.shape()[1];
  PD_CHECK(width % 2 == 0, op, ": input 'gate_up' must have an even number of columns (gate | up), got ", width);
  const int64_t half_width = width / 2;
  paddle::Tensor out = EmptyOutput({rows, half_width}, gate_up.dtype(), gate_up.place());
  const bool on_gpu = RunsOnGpu(op, "gate_up", gate_up);
  DispatchFloat(op, "gate_up", gate_up, [&](auto type) {
    using S = typename decltype(type)::type;
    const S* in = FloatData<S>(gate_up);
    S* dst = FloatData<S>(out);
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchSiluMul<S>(in, rows, half_width, dst, gate_up.stream()));
#endif
      return;
    }
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t f = 0; f < half_width; ++f) {
        const float g = ToFloat(in[t * width + f]);
        const float u = ToFloat(in[t * width + half_width + f]);
        dst[t * half_width + f] = FromFloat<S>(GatedSilu(g, u));
      }
    }
  });
  return {out};
}

}  // namespace fdo::activation

PD_BUILD_OP(silu_mul).Inputs({"gate_up"}).Outputs({"out"}).SetKernelFn(PD_KERNEL(fdo::activation::SiluMul));
