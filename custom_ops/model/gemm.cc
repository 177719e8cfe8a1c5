// gemm: y[M,N] = x[M,K] @ w[K,N], row-major with w stored [K,N], float32 or float16 (float32 accumulation).
// On the GPU through cuBLASLt with the algorithm tuned per shape (gemm.cu: cuBLAS's default heuristic picks
// slow kernels for some decode shapes); on the CPU paddle's matmul, which the model uses there anyway.
// Matmul() is the model's GEMM for decoder_layer: paddle's matmul, or this op on a GPU with FDOVERLAP_GEMM=tuned.
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "../include/dispatch.h"
#include "gemm.h"

namespace fdo::gemm {

constexpr const char* kGemm = "gemm";

// kGemmModes as "a, b" (for the error of an unknown FDOVERLAP_GEMM).
std::string GemmModeList() {
  std::string names;
  for (int i = 0; i < kGemmModeCount; ++i) names += (i ? ", " : "") + std::string(kGemmModes[i]);
  return names;
}

// True when FDOVERLAP_GEMM names the tuned op, false for paddle's matmul (or unset or empty).
bool TunedFromEnv(const char* op) {
  const char* value = std::getenv(kGemmEnv);
  if (value == nullptr || *value == '\0' || std::strcmp(value, kGemmModes[0]) == 0) return false;
  PD_CHECK(std::strcmp(value, kGemmModes[1]) == 0, op, ": ", kGemmEnv, "=", value, " is not a GEMM choice (",
           GemmModeList(), ")");
  return true;
}

std::vector<paddle::Tensor> Gemm(const paddle::Tensor& x, const paddle::Tensor& w) {
  const char* op = kGemm;
  CheckShape(op, "x", x, {-1, -1});
  CheckShape(op, "w", w, {x.shape()[1], -1});
  CheckSameDtype(op, "w", w, "x", x);
  CheckSamePlace(op, "w", w, "x", x);
  const bool on_gpu = RunsOnGpu(op, "x", x);
  if (!on_gpu) {
    DispatchFloat(op, "x", x, [](auto) {});
    return {paddle::experimental::matmul(x, w)};
  }
  const int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
  paddle::Tensor y = EmptyOutput({m, n}, x.dtype(), x.place());
#ifdef PADDLE_WITH_CUDA
  DispatchFloat(op, "x", x, [&](auto type) {
    using S = typename decltype(type)::type;
    const GemmDtype dtype = std::is_same<S, half_bits>::value ? GemmDtype::kFloat16 : GemmDtype::kFloat32;
    const std::string error = LaunchGemm(dtype, x.data(), w.data(), y.data(), m, n, k, x.stream());
    PD_CHECK(error.empty(), op, ": ", error);
  });
#endif
  return {y};
}

// The model's GEMM inside decoder_layer: the tuned op on a GPU with FDOVERLAP_GEMM=tuned, else paddle's matmul
// (FDOVERLAP_GEMM unset, empty or paddle, and on the CPU).
paddle::Tensor Matmul(const char* op, const paddle::Tensor& x, const paddle::Tensor& w) {
  if (x.is_gpu() && TunedFromEnv(op)) return Gemm(x, w)[0];
  return paddle::experimental::matmul(x, w);
}

}  // namespace fdo::gemm

PD_BUILD_OP(gemm).Inputs({"x", "w"}).Outputs({"y"}).SetKernelFn(PD_KERNEL(fdo::gemm::Gemm));
