// The decode GEMM's launcher: the kernel configurations (gemm_decode.cuh), the plan that picks one and the
// number of K splits for a shape, the TMA descriptors and the cluster launch. A plan is a fixed function of
// the shape, never timed, so every process computes the same sums.
#include <algorithm>
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
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
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
  config.gridDim = dim3(tiles, args.splits, 1);
  config.blockDim = dim3(C::kThreads, 1, 1);
  config.dynamicSmemBytes = C::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster = {};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 1;
  cluster.val.clusterDim.y = static_cast<unsigned>(args.splits);
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, DecodeGemmKernel<C>, w_map, x_map, args);
}

struct ConfigEntry {
  int nb, tn;
  cudaError_t (*launch)(const uint16_t*, const uint16_t*, const DecodeGemmArgs&, int, cudaStream_t);
};

template <int NB, int MT, int WGS, int STAGES>
constexpr ConfigEntry Entry() {
  using C = DecodeGemmConfig<NB, MT, WGS, STAGES>;
  return {NB, C::TN, &LaunchConfig<C>};
}

// The fastest of a sweep of tile widths, warpgroups, stages and splits on an H200 (docs/BENCHMARKS.md): per
// row bucket a wide configuration (256 columns a block, K whole: gate_up's N = 28,672 gives the SMs enough
// tiles), and for N = 4096 / 6144 a narrow one (128 columns, K split across a cluster, as the column tiles are
// too few) at up to 16 rows only: above, cuBLAS's heuristic was as fast or faster in that sweep.
constexpr ConfigEntry kConfigs[] = {Entry<16, 4, 1, 6>(), Entry<32, 4, 1, 4>(), Entry<64, 2, 2, 4>(),
                                    Entry<128, 2, 2, 4>(), Entry<16, 2, 1, 6>()};
constexpr int kNarrow = 4;               // kConfigs' narrow entry; 0 .. 3 are the wide ones by row bucket
constexpr int kNarrowMaxRows = 16;
constexpr int kWideColumns = 128 * 132;  // N from which 128-column tiles alone cover an H200's SMs
constexpr int kSplitBlocks = 112;        // about the blocks a narrow GEMM is split into (the sweep's best: 96-128)
constexpr int kMaxSplits = 8;            // a portable cluster

int RowsBucket(int64_t m) { return m <= 16 ? 0 : m <= 32 ? 1 : m <= 64 ? 2 : 3; }

}  // namespace

DecodeGemmPlan PlanDecodeGemm(int64_t m, int64_t n, int64_t k, bool glu) {
  if (m < 1 || m > kDecodeGemmMaxRows || k <= 0 || k % kDecodeKChunk != 0 || k > (1 << 30) || n <= 0 ||
      n > (1 << 30) || Encoder() == nullptr) {
    return {};
  }
  const bool wide = n >= kWideColumns;
  if (!wide && m > kNarrowMaxRows) return {};
  const int config = wide ? RowsBucket(m) : kNarrow;
  const ConfigEntry& c = kConfigs[config];
  const int64_t columns = glu ? n / 2 : n;
  const int64_t tile = glu ? c.tn / 2 : c.tn;
  if ((glu && n % 2 != 0) || columns % tile != 0) return {};
  const int64_t tiles = columns / tile;
  const int chunks = static_cast<int>(k / kDecodeKChunk);
  const int64_t most = std::min(kMaxSplits, chunks);
  const int splits = wide ? 1 : static_cast<int>(std::clamp<int64_t>(kSplitBlocks / tiles, 1, most));
  return {config, splits};
}

std::string LaunchDecodeGemm(const DecodeGemmPlan& plan, const uint16_t* x, const uint16_t* w, uint16_t* y,
                             int64_t m, int64_t n, int64_t k, bool glu, cudaStream_t stream) {
  if (plan.config < 0 || plan.config > kNarrow) return "the decode GEMM does not cover this shape";
  const ConfigEntry& c = kConfigs[plan.config];
  const int64_t columns = glu ? n / 2 : n;
  if (((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(y)) & 15) != 0) {
    return "the decode GEMM needs x, w and y 16-byte aligned";
  }
  const DecodeGemmArgs args{y, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), plan.splits, glu ? 1 : 0};
  const cudaError_t err = c.launch(x, w, args, static_cast<int>(columns / (glu ? c.tn / 2 : c.tn)), stream);
  if (err != cudaSuccess) return std::string("decode GEMM launch: ") + cudaGetErrorString(err);
  return "";
}

}  // namespace fdo::gemm
#else  // no sm_90a code in this build: the decode GEMM covers nothing

namespace fdo::gemm {

DecodeGemmPlan PlanDecodeGemm(int64_t, int64_t, int64_t, bool) { return {}; }

std::string LaunchDecodeGemm(const DecodeGemmPlan&, const uint16_t*, const uint16_t*, uint16_t*, int64_t, int64_t,
                             int64_t, bool, cudaStream_t) {
  return "the decode GEMM needs an sm_90a (Hopper) build";
}

}  // namespace fdo::gemm
#endif
