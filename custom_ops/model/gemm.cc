// gemm: y[M,N] = x[M,K] @ w[K,N], row-major with w stored [K,N], float32 or float16 (float32 accumulation).
// On the GPU through cuBLASLt with the algorithm tuned per shape (gemm.cu: cuBLAS's default heuristic picks
// slow kernels for some decode shapes); on the CPU paddle's matmul, which the model uses there anyway.
// gemm_decode: y = x @ w, or with glu silu_mul(x @ w), through the decode GEMM kernel (gemm_decode.cuh) for the
// shapes its plan takes (float16 on a GPU of an sm_90a build, 65 .. 128 rows, N >= 16,896, K a multiple of 64:
// gate_up and lm_head at large decode batches), else paddle's matmul (and silu_mul). Matmul() and MatmulSiluMul()
// are decoder_layer's GEMMs, as FDOVERLAP_GEMM picks.
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "../include/dispatch.h"
#include "gemm.h"

namespace fdo::gemm {

constexpr const char* kGemm = "gemm";
constexpr const char* kGemmDecode = "gemm_decode";

// kGemmModes as "a, b" (for the error of an unknown FDOVERLAP_GEMM).
std::string GemmModeList() {
  std::string names;
  for (int i = 0; i < kGemmModeCount; ++i) names += (i ? ", " : "") + std::string(kGemmModes[i]);
  return names;
}

enum class GemmMode { kDecode, kPaddle, kTuned };  // kGemmModes' order

// The choice FDOVERLAP_GEMM names (kGemmModes[0] when unset or empty); an unknown name fails the op.
GemmMode ModeFromEnv(const char* op) {
  const char* value = std::getenv(kGemmEnv);
  if (value == nullptr || *value == '\0') return GemmMode::kDecode;
  for (int i = 0; i < kGemmModeCount; ++i) {
    if (std::strcmp(value, kGemmModes[i]) == 0) return static_cast<GemmMode>(i);
  }
  PD_CHECK(false, op, ": ", kGemmEnv, "=", value, " is not a GEMM choice (", GemmModeList(), ")");
  return GemmMode::kDecode;
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

// x @ w (glu: silu_mul(x @ w)) through the decode GEMM where its plan covers the shape, else paddle's matmul.
paddle::Tensor DecodeOrMatmul(const char* op, const paddle::Tensor& x, const paddle::Tensor& w, bool glu) {
  const int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
#ifdef PADDLE_WITH_CUDA
  if (x.is_gpu() && x.dtype() == paddle::DataType::FLOAT16 && DecodeGemmCovers(m, n, k, glu)) {
    paddle::Tensor y = EmptyOutput({m, glu ? n / 2 : n}, x.dtype(), x.place());
    const std::string error = LaunchDecodeGemm(FloatData<half_bits>(x), FloatData<half_bits>(w),
                                               FloatData<half_bits>(y), m, n, k, glu, x.stream());
    PD_CHECK(error.empty(), op, ": ", error);
    return y;
  }
#endif
  const paddle::Tensor y = paddle::experimental::matmul(x, w);
  return glu ? activation::SiluMul(y)[0] : y;
}

std::vector<paddle::Tensor> GemmDecode(const paddle::Tensor& x, const paddle::Tensor& w, bool glu) {
  const char* op = kGemmDecode;
  CheckShape(op, "x", x, {-1, -1});
  CheckShape(op, "w", w, {x.shape()[1], -1});
  CheckSameDtype(op, "w", w, "x", x);
  CheckSamePlace(op, "w", w, "x", x);
  DispatchFloat(op, "x", x, [](auto) {});
  PD_CHECK(!glu || w.shape()[1] % 2 == 0, op,
           ": with glu, input 'w' must have an even number of columns (gate | up), got ", w.shape()[1]);
  return {DecodeOrMatmul(op, x, w, glu)};
}

// decoder_layer's GEMM: on a GPU gemm_decode's (FDOVERLAP_GEMM unset, empty or decode) or the tuned op (tuned),
// else paddle's matmul (paddle, and on the CPU).
paddle::Tensor Matmul(const char* op, const paddle::Tensor& x, const paddle::Tensor& w) {
  if (x.is_gpu()) {
    const GemmMode mode = ModeFromEnv(op);
    if (mode == GemmMode::kTuned) return Gemm(x, w)[0];
    if (mode == GemmMode::kDecode) return DecodeOrMatmul(op, x, w, false);
  }
  return paddle::experimental::matmul(x, w);
}

// decoder_layer's silu_mul(x @ gate_up): one kernel with the decode GEMM, else silu_mul after Matmul().
paddle::Tensor MatmulSiluMul(const char* op, const paddle::Tensor& x, const paddle::Tensor& w) {
  if (x.is_gpu() && ModeFromEnv(op) == GemmMode::kDecode) return DecodeOrMatmul(op, x, w, true);
  return activation::SiluMul(Matmul(op, x, w))[0];
}

}  // namespace fdo::gemm

PD_BUILD_OP(gemm).Inputs({"x", "w"}).Outputs({"y"}).SetKernelFn(PD_KERNEL(fdo::gemm::Gemm));
PD_BUILD_OP(gemm_decode)
    .Inputs({"x", "w"})
    .Outputs({"y"})
    .Attrs({"glu: bool"})
    .SetKernelFn(PD_KERNEL(fdo::gemm::GemmDecode));
