// The gemm op's cuBLASLt side: one handle, one workspace and two timing events per device, created once
// (the workspace pointer stays fixed, so a captured graph that uses it stays valid), and a cache of plans.
//
// Row-major y[M,N] = x[M,K] @ w[K,N] is column-major y^T[N,M] = w^T[N,K] @ x^T[K,M]: cuBLASLt's A is w
// (N x K, ld N), B is x (K x M, ld K), C = D is y (N x M, ld N), neither transposed.
//
// A plan holds the descriptors of one exact shape and its algorithm. The algorithm is chosen per bucket of
// M (kBuckets: about two per octave, so that prefill chunks of every length do not each time the candidates
// in the middle of a run), N, K, dtype and pointer alignment: the first call of a bucket times up to
// kCandidates of cublasLtMatmulAlgoGetHeuristic's results on the caller's stream (interleaved trials, the
// fastest mean kept); later shapes of the bucket take its algorithm when cublasLtMatmulAlgoCheck accepts it.
// Split-K partial sums are reduced in float32 (no in-place or output-type reductions, which add float16
// partials), so every candidate rounds only its final sum to float16.
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gemm.h"

namespace fdo::gemm {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr int kCandidates = 16;
constexpr int kWarmupRuns = 3;
constexpr int kTrials = 2;
constexpr float kTrialMs = 0.2f;  // each candidate's trial runs it about this long (2 to 20 runs)
constexpr int64_t kBuckets[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256};

// The bucket of m: the smallest of kBuckets that holds it, then powers of two and 1.5 times them.
int64_t BucketOf(int64_t m) {
  for (int64_t b : kBuckets) {
    if (m <= b) return b;
  }
  int64_t b = 256;
  while (true) {
    if (m <= b + b / 2) return b + b / 2;
    b *= 2;
    if (m <= b) return b;
  }
}

// The largest power of two up to 256 that every pointer is aligned to.
int Alignment(const void* x, const void* w, const void* y) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(y);
  int align = 256;
  while (align > 1 && (bits & static_cast<uintptr_t>(align - 1)) != 0) align /= 2;
  return align;
}

struct Key {
  int dtype;
  int64_t m, n, k;
  int align;
  bool operator==(const Key& o) const {
    return dtype == o.dtype && m == o.m && n == o.n && k == o.k && align == o.align;
  }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    size_t h = static_cast<size_t>(key.dtype) * 1000003u + static_cast<size_t>(key.align);
    for (int64_t v : {key.m, key.n, key.k}) h = h * 1099511628211ull + static_cast<size_t>(v);
    return h;
  }
};

std::string Failed(const char* call, cublasStatus_t status) {
  return std::string(call) + ": " + cublasLtGetStatusName(status) + " (" + cublasLtGetStatusString(status) + ")";
}

std::string Failed(const char* call, cudaError_t err) {
  return std::string(call) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
}

// The descriptors of one exact shape and the algorithm it runs.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }

  std::string Describe(const Key& key) {
    const cudaDataType_t type = key.dtype == static_cast<int>(GemmDtype::kFloat16) ? CUDA_R_16F : CUDA_R_32F;
    cublasStatus_t s = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) return Failed("cublasLtMatmulDescCreate", s);
    const uint64_t m = key.m, n = key.n, k = key.k;
    if ((s = cublasLtMatrixLayoutCreate(&a, type, n, k, key.n)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatrixLayoutCreate(&b, type, k, m, key.k)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatrixLayoutCreate(&c, type, n, m, key.n)) != CUBLAS_STATUS_SUCCESS) {
      return Failed("cublasLtMatrixLayoutCreate", s);
    }
    return "";
  }
};

struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans;          // exact m
  std::unordered_map<Key, cublasLtMatmulAlgo_t, KeyHash> bucket_algos;  // m = BucketOf(m)
};

std::mutex g_mutex;  // guards g_devices and every DeviceState

// The state of the current device, created on its first call. Created in relaxed capture mode: a first
// call inside a graph capture may allocate; the states live as long as the process.
std::string DeviceStateOf(DeviceState** out) {
  static std::unordered_map<int, DeviceState*> devices;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return Failed("cudaGetDevice", err);
  auto found = devices.find(device);
  if (found != devices.end()) {
    *out = found->second;
    return "";
  }
  auto state = std::make_unique<DeviceState>();
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  std::string error;
  const cublasStatus_t s = cublasLtCreate(&state->handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    error = Failed("cublasLtCreate", s);
  } else if ((err = cudaMalloc(&state->workspace, kWorkspaceBytes)) != cudaSuccess) {
    error = Failed("cudaMalloc (the gemm workspace)", err);
  } else if ((err = cudaEventCreate(&state->start)) != cudaSuccess ||
             (err = cudaEventCreate(&state->stop)) != cudaSuccess) {
    error = Failed("cudaEventCreate", err);
  }
  cudaThreadExchangeStreamCaptureMode(&mode);
  if (!error.empty()) return error;  // a half-made state leaks; the op reports the error
  *out = devices[device] = state.release();
  return "";
}

cublasStatus_t Run(const DeviceState& st, const Plan& plan, const cublasLtMatmulAlgo_t& algo, const void* x,
                   const void* w, void* y, cudaStream_t stream) {
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(st.handle, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c, &algo,
                        st.workspace, kWorkspaceBytes, stream);
}

// Up to kCandidates algorithms for the plan's shape that fit the workspace, best first by the heuristic.
std::string Candidates(const DeviceState& st, const Plan& plan, int align,
                       std::vector<cublasLtMatmulHeuristicResult_t>* out) {
  cublasLtMatmulPreference_t pref = nullptr;
  cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
  if (s != CUBLAS_STATUS_SUCCESS) return Failed("cublasLtMatmulPreferenceCreate", s);
  const uint64_t workspace = kWorkspaceBytes;
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  const uint32_t alignment = static_cast<uint32_t>(align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions,
                                       sizeof(reductions));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof(alignment));
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(kCandidates);
  int returned = 0;
  s = cublasLtMatmulAlgoGetHeuristic(st.handle, plan.op, plan.a, plan.b, plan.c, plan.c, pref, kCandidates,
                                     results.data(), &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS) return Failed("cublasLtMatmulAlgoGetHeuristic", s);
  out->clear();
  for (int i = 0; i < returned; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= kWorkspaceBytes) {
      out->push_back(results[i]);
    }
  }
  if (out->empty()) return "cublasLtMatmulAlgoGetHeuristic: no algorithm for this shape";
  return "";
}

// Mean ms per run of `runs` back-to-back runs of algo on the stream; +inf if one fails.
float TimeRuns(const DeviceState& st, const Plan& plan, const cublasLtMatmulAlgo_t& algo, int runs, const void* x,
               const void* w, void* y, cudaStream_t stream) {
  bool ok = cudaEventRecord(st.start, stream) == cudaSuccess;
  for (int r = 0; ok && r < runs; ++r) ok = Run(st, plan, algo, x, w, y, stream) == CUBLAS_STATUS_SUCCESS;
  ok = cudaEventRecord(st.stop, stream) == cudaSuccess && ok;
  float ms = 0.0f;
  ok = cudaEventSynchronize(st.stop) == cudaSuccess && cudaEventElapsedTime(&ms, st.start, st.stop) == cudaSuccess && ok;
  return ok ? ms / static_cast<float>(runs) : INFINITY;
}

// The fastest candidate on this stream (its output lands in y, which the real call then overwrites).
std::string Tune(const DeviceState& st, const Plan& plan, const std::vector<cublasLtMatmulHeuristicResult_t>& cands,
                 const void* x, const void* w, void* y, cudaStream_t stream, cublasLtMatmulAlgo_t* best) {
  *best = cands[0].algo;
  if (cands.size() == 1) return "";
  const float first = std::max(TimeRuns(st, plan, cands[0].algo, kWarmupRuns, x, w, y, stream), 1e-4f);
  const int runs = std::clamp(static_cast<int>(std::ceil(kTrialMs / first)), 2, 20);
  std::vector<float> fastest(cands.size(), INFINITY);
  for (int trial = 0; trial < kTrials; ++trial) {
    for (size_t i = 0; i < cands.size(); ++i) {
      if (trial > 0 && std::isinf(fastest[i])) continue;  // failed once: not a candidate
      fastest[i] = std::min(fastest[i], TimeRuns(st, plan, cands[i].algo, runs, x, w, y, stream));
    }
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return Failed("timing the gemm candidates", err);
  const size_t i = static_cast<size_t>(std::min_element(fastest.begin(), fastest.end()) - fastest.begin());
  if (std::isinf(fastest[i])) return "cublasLtMatmul: no candidate ran";
  *best = cands[i].algo;
  return "";
}

// The plan of this exact shape: cached, or made now with the bucket's algorithm (tuned now when the bucket
// has none and the stream is not capturing; the heuristic's first when it is).
std::string PlanFor(DeviceState& st, const Key& key, const void* x, const void* w, void* y, cudaStream_t stream,
                    const Plan** out) {
  auto found = st.plans.find(key);
  if (found != st.plans.end()) {
    *out = found->second.get();
    return "";
  }
  auto plan = std::make_unique<Plan>();
  std::string error = plan->Describe(key);
  if (!error.empty()) return error;
  Key bucket = key;
  bucket.m = BucketOf(key.m);
  auto algo = st.bucket_algos.find(bucket);
  cublasLtMatmulHeuristicResult_t checked{};
  if (algo != st.bucket_algos.end() &&
      cublasLtMatmulAlgoCheck(st.handle, plan->op, plan->a, plan->b, plan->c, plan->c, &algo->second, &checked) ==
          CUBLAS_STATUS_SUCCESS &&
      checked.workspaceSize <= kWorkspaceBytes) {
    plan->algo = algo->second;
  } else {
    std::vector<cublasLtMatmulHeuristicResult_t> cands;
    error = Candidates(st, *plan, key.align, &cands);
    if (!error.empty()) return error;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    const cudaError_t err = cudaStreamIsCapturing(stream, &capture);
    if (err != cudaSuccess) return Failed("cudaStreamIsCapturing", err);
    plan->algo = cands[0].algo;
    if (capture == cudaStreamCaptureStatusNone) {
      error = Tune(st, *plan, cands, x, w, y, stream, &plan->algo);
      if (!error.empty()) return error;
    }
    if (algo == st.bucket_algos.end()) st.bucket_algos.emplace(bucket, plan->algo);
  }
  *out = plan.get();
  st.plans.emplace(key, std::move(plan));
  return "";
}

}  // namespace

std::string LaunchGemm(GemmDtype dtype, const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                       cudaStream_t stream) {
  if (m == 0 || n == 0) return "";
  if (k == 0) {
    const size_t bytes = static_cast<size_t>(m * n) * (dtype == GemmDtype::kFloat16 ? 2 : 4);
    const cudaError_t err = cudaMemsetAsync(y, 0, bytes, stream);
    return err == cudaSuccess ? "" : Failed("cudaMemsetAsync", err);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState* st = nullptr;
  std::string error = DeviceStateOf(&st);
  if (!error.empty()) return error;
  const Key key{static_cast<int>(dtype), m, n, k, Alignment(x, w, y)};
  const Plan* plan = nullptr;
  error = PlanFor(*st, key, x, w, y, stream, &plan);
  if (!error.empty()) return error;
  const cublasStatus_t s = Run(*st, *plan, plan->algo, x, w, y, stream);
  return s == CUBLAS_STATUS_SUCCESS ? "" : Failed("cublasLtMatmul", s);
}

}  // namespace fdo::gemm
