// The decode GEMM's launcher: the plan (which shapes the kernel of gemm_decode.cuh takes, in which
// configuration), the TMA descriptors and the launch. A plan is a fixed function of the shape, never timed, so
// every process computes the same sums.
#include <string>

#include "gemm.h"

#ifdef FDO_WGMMA
#include "gemm_decode.cuh"

namespace fdo::gemm {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's cuTensorMapEncodeTiled, found through the runtime (no libcuda link); null when missing.
EncodeTiled Encoder() {
  static const EncodeTiled encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<EncodeTiled>(fn) : nullptr;
  }();
  return encode;
}

// A row-major float16 [outer, inner] matrix read in boxes of box_outer x 64 elements (128 bytes, the
// 128-byte swizzle wgmma's descriptors describe); rows past the end read as zeros.
bool TensorMap(CUtensorMap* map, const uint16_t* data, int64_t outer, int64_t inner, int box_outer) {
  const EncodeTiled encode = Encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(outer)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(inner) * 2};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kDecodeKChunk), static_cast<cuuint32_t>(box_outer)};
  const cuuint32_t element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<uint16_t*>(data), dims, strides, box,
                element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <class C>
cudaError_t LaunchConfig(const uint16_t* x, const uint16_t* w, const DecodeGemmArgs& args, int tiles,
                         cudaStream_t stream) {
  static const cudaError_t attribute = cudaFuncSetAttribute(
      DecodeGemmKernel<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::kSmemBytes));
  if (attribute != cudaSuccess) return attribute;
  CUtensorMap w_map, x_map;
  if (!TensorMap(&w_map, w, args.k, args.n, kDecodeKChunk) || !TensorMap(&x_map, x, args.m, args.k, C::NB)) {
    return cudaErrorNotSupported;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(tiles, 1, 1);
  config.blockDim = dim3(C::kThreads, 1, 1);
  config.dynamicSmemBytes = C::kSmemBytes;
  config.stream = stream;
  return cudaLaunchKernelEx(&config, DecodeGemmKernel<C>, w_map, x_map, args);
}

// The configuration and the shapes the plan covers: on an H200 a sweep of tile widths, warpgroups, stages and K
// splits, then the op against cuBLAS's heuristic in benchmarks/kernels.py (docs/BENCHMARKS.md), found the kernel
// faster only for wide GEMMs (N >= kWideColumns: gate_up, lm_head) above 64 rows, where cuBLAS's heuristic
// picks a kernel at about half the bandwidth (gate_up at 128 rows: 66 against 104 us); elsewhere it was as
// fast or slower, so the plan leaves those shapes to paddle's matmul. 256 columns a block (two warpgroups of
// two 64-column MMA tiles), four stages: N / 256 >= 66 tiles for 132 SMs.
using WideConfig = DecodeGemmConfig<128, 2, 2, 4>;
constexpr int kMinRows = 65;
constexpr int kWideColumns = 128 * 132;

}  // namespace

bool DecodeGemmCovers(int64_t m, int64_t n, int64_t k, bool glu) {
  constexpr int tn = WideConfig::TN;
  const bool fits = m >= kMinRows && m <= kDecodeGemmMaxRows && k > 0 && k % kDecodeKChunk == 0 &&
                    k <= (1 << 30) && n >= kWideColumns && n <= (1 << 30) && (glu ? (n / 2) % (tn / 2) : n % tn) == 0;
  return fits && Encoder() != nullptr;
}

std::string LaunchDecodeGemm(const uint16_t* x, const uint16_t* w, uint16_t* y, int64_t m, int64_t n, int64_t k,
                             bool glu, cudaStream_t stream) {
  if (!DecodeGemmCovers(m, n, k, glu)) return "the decode GEMM does not cover this shape";
  if (((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(y)) & 15) != 0) {
    return "the decode GEMM needs x, w and y 16-byte aligned";
  }
  const DecodeGemmArgs args{y, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), glu ? 1 : 0};
  const cudaError_t err = LaunchConfig<WideConfig>(x, w, args, static_cast<int>(n / WideConfig::TN), stream);
  if (err != cudaSuccess) return std::string("decode GEMM launch: ") + cudaGetErrorString(err);
  return "";
}

}  // namespace fdo::gemm
#else  // no sm_90a code in this build: the decode GEMM covers nothing

namespace fdo::gemm {

bool DecodeGemmCovers(int64_t, int64_t, int64_t, bool) { return false; }

std::string LaunchDecodeGemm(const uint16_t*, const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, bool,
                             cudaStream_t) {
  return "the decode GEMM needs an sm_90a (Hopper) build";
}

}  // namespace fdo::gemm
#endif
