// gemm: y[M,N] = x[M,K] @ w[K,N] (row-major, w stored [K,N]) through cuBLASLt with an algorithm tuned per shape
// (gemm.cu), and the environment variable that picks the model's GEMMs on a GPU.
#pragma once

#include <cstdint>

namespace fdo::gemm {

// FDOVERLAP_GEMM picks the model's GEMMs on a GPU (decoder_layer, and the op-by-op path in
// fdoverlap_cli/engine/model.py): "decode" (the gemm_decode op: the decode GEMM kernel, with silu_mul fused into
// gate_up, for the shapes its plan takes, where cuBLAS's heuristic is slow; paddle's matmul for the rest),
// "paddle" (paddle's matmul everywhere, cuBLAS's heuristic: what FastDeploy runs) or "tuned" (the gemm op:
// cuBLASLt timed per shape in each process, so two processes may round differently); unset or empty: the
// first. Every choice but "tuned" computes the same sums in every process. fdoverlap_cli/kernel_choices.py
// mirrors these names (tests/ops check that).
constexpr const char* kGemmEnv = "FDOVERLAP_GEMM";
constexpr const char* kGemmModes[] = {"decode", "paddle", "tuned"};
constexpr int kGemmModeCount = static_cast<int>(sizeof(kGemmModes) / sizeof(kGemmModes[0]));

}  // namespace fdo::gemm

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

#include <string>

namespace fdo::gemm {

enum class GemmDtype { kFloat32, kFloat16 };

// y = x @ w on `stream` of the current device; float32 accumulation. The first call of a shape (M rounded
// up to a bucket, N, K, dtype, pointer alignment) times cuBLASLt's heuristic candidates on the stream and
// keeps the fastest; while the stream is capturing a CUDA graph it never times, and a shape not yet seen
// takes the heuristic's first. Returns "" or what failed.
std::string LaunchGemm(GemmDtype dtype, const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                       cudaStream_t stream);

// The decode GEMM (gemm_decode.cuh, sm_90a builds): float16 y = x @ w for up to kDecodeGemmMaxRows rows, or with
// glu y = silu(x @ w[:, :N/2]) * (x @ w[:, N/2:]). DecodeGemmCovers: whether it takes the shape (false where
// cuBLAS is as fast, or the build has no sm_90a code: the caller takes another GEMM); LaunchDecodeGemm returns ""
// or what failed.
constexpr int kDecodeGemmMaxRows = 128;
bool DecodeGemmCovers(int64_t m, int64_t n, int64_t k, bool glu);
std::string LaunchDecodeGemm(const uint16_t* x, const uint16_t* w, uint16_t* y, int64_t m, int64_t n, int64_t k,
                             bool glu, cudaStream_t stream);

}  // namespace fdo::gemm
#endif
