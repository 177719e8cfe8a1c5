// CUDA kernels of write_kv_cache (one block per row, 16-byte copies) and attention: the float16
// tensor-core kernel (attention_tc.cuh) or the SIMT kernel (attention_simt.cuh), as PlanAttention
// chooses, and the kernel that merges the parts of a row whose keys were split across blocks.
#include <climits>
#include <cstdlib>
#include <cstring>

#include "attention_simt.cuh"
#include "attention_tc_launch.cuh"

namespace fdo::attention {

constexpr int kSimtBlocksPerSm = 4;  // about what fits of the SIMT kernel (it is register-bound)
constexpr int kMaxSplits = 64;
constexpr int kMinSplitKeys = 2 * kSplitAlign;
constexpr int kTcMaxHeadDim = 128;
constexpr int kCombineWarps = 4;

// ------------------------------------------------------------------ write_kv_cache

template <typename S, int N>
__global__ void WriteKvCacheKernel(const S* qkv, S* key_cache, S* value_cache, const int32_t* batch,
                                   const int32_t* cu, const int32_t* dec, AttentionShape s) {
  const int64_t t = blockIdx.x;
  const int64_t p = s.Position(t, batch, cu, dec);
  if (p < 0) return;
  const int64_t kv_width = s.KvWidth();
  const S* k = qkv + t * s.QkvWidth() + s.QWidth();
  const int64_t base = s.CacheOffset(batch[t], p, 0);
  using Raw = typename Vec<S, N>::Raw;
  for (int64_t i = threadIdx.x * N; i < kv_width; i += blockDim.x * N) {
    *reinterpret_cast<Raw*>(key_cache + base + i) = *reinterpret_cast<const Raw*>(k + i);
    *reinterpret_cast<Raw*>(value_cache + base + i) = *reinterpret_cast<const Raw*>(k + kv_width + i);
  }
}

template <typename S>
cudaError_t LaunchWriteKvCache(const S* qkv, S* key_cache, S* value_cache, const int32_t* batch_id_per_token,
                               const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                               cudaStream_t stream) {
  if (shape.rows == 0) return cudaSuccess;
  const unsigned rows = static_cast<unsigned>(shape.rows);
  if (shape.head_dim % kVec16<S> == 0 && Aligned16({qkv, key_cache, value_cache})) {
    WriteKvCacheKernel<S, kVec16<S>><<<rows, 128, 0, stream>>>(qkv, key_cache, value_cache, batch_id_per_token,
                                                               cu_seqlens_q, seq_lens_decoder, shape);
  } else {
    WriteKvCacheKernel<S, 1><<<rows, 256, 0, stream>>>(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q,
                                                       seq_lens_decoder, shape);
  }
  return cudaGetLastError();
}

// ------------------------------------------------------------------ combine the splits

// One warp per (row, q head): out = sum_s w_s acc_s / sum_s w_s l_s with w_s = 2^(m_s - max m); zeros for a
// row outside the cache. Each lane holds the weights of splits lane and lane + 32.
template <typename S>
__global__ void __launch_bounds__(kCombineWarps * 32) CombineSplitsKernel(AttentionArgs<S> a) {
  static_assert(kMaxSplits <= 64, "two splits a lane");
  const AttentionShape& s = a.shape;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kCombineWarps + (threadIdx.x >> 5);
  if (pair >= s.rows * s.num_q_heads) return;
  const int lane = threadIdx.x & 31;
  const int D = s.head_dim;
  const int64_t t = pair / s.num_q_heads;
  const int h = static_cast<int>(pair - t * s.num_q_heads);
  S* out = a.out + t * s.QWidth() + static_cast<int64_t>(h) * D;
  if (s.Position(t, a.batch, a.cu, a.dec) < 0) {
    for (int d = lane; d < D; d += 32) out[d] = StoreFloat<S>(0.0f);
    return;
  }
  const int64_t first = a.PartialIndex(t, h, 0);
  float m[2], l[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int i = lane + 32 * k;
    m[k] = i < a.splits ? a.partial_ml[2 * (first + i)] : -CUDART_INF_F;
    l[k] = i < a.splits ? a.partial_ml[2 * (first + i) + 1] : 0.0f;
  }
  float top = fmaxf(l[0] > 0.0f ? m[0] : -CUDART_INF_F, l[1] > 0.0f ? m[1] : -CUDART_INF_F);
  for (int offset = 16; offset > 0; offset >>= 1) top = fmaxf(top, __shfl_xor_sync(0xFFFFFFFFu, top, offset));
  float w[2], total = 0.0f;
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    w[k] = l[k] > 0.0f ? exp2f(m[k] - top) : 0.0f;
    total += w[k] * l[k];
  }
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xFFFFFFFFu, total, offset);
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  constexpr int kPerLane = kMaxHeadDimCuda / 32;
  float acc[kPerLane] = {};
  const float* parts = a.partial_out + first * D;
  for (int i = 0; i < a.splits; ++i) {
    const float wi = __shfl_sync(0xFFFFFFFFu, i < 32 ? w[0] : w[1], i & 31);
    if (wi == 0.0f) continue;  // an empty split wrote no sums (its memory holds anything)
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int d = lane + 32 * k;
      if (d < D) acc[k] += wi * parts[static_cast<int64_t>(i) * D + d];
    }
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int d = lane + 32 * k;
    if (d < D) out[d] = StoreFloat<S>(acc[k] * inv);
  }
}

// ------------------------------------------------------------------ plan and launch

// The index in `names` of the value of environment variable `env`, `fallback` when unset or empty, -1 if unknown.
int ConfigFromEnv(const char* env, const char* const* names, int count, int fallback) {
  const char* name = std::getenv(env);
  if (name == nullptr || name[0] == '\0') return fallback;
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(name, names[i]) == 0) return i;
  }
  return -1;
}

int PrefillTcFromEnv() {
  const int config = ConfigFromEnv(kPrefillTcEnv, kPrefillTcNames, kPrefillTcCount, kPrefillTcDefault);
#ifndef FDO_WGMMA
  if (config >= kPrefillTcFirstWg) return kPrefillTcNotBuilt;
#endif
  return config;
}

int DecodeTcFromEnv() { return ConfigFromEnv(kDecodeTcEnv, kDecodeTcNames, kDecodeTcCount, kDecodeTcDefault); }

AttentionPlan PlanAttention(const AttentionShape& shape, bool float16, float scale, const void* qkv,
                            const void* key_cache, const void* value_cache) {
  AttentionPlan plan{};
  const int group = shape.num_q_heads / shape.num_kv_heads;
  plan.tensor_cores = float16 && scale > 0.0f && shape.head_dim % 8 == 0 && shape.head_dim <= kTcMaxHeadDim &&
                      shape.max_model_len * shape.KvWidth() <= INT_MAX && Aligned16({qkv, key_cache, value_cache});
  plan.prefill_tiles = plan.tensor_cores && shape.rows > shape.bsz;
  plan.prefill_config = plan.prefill_tiles ? PrefillTcFromEnv() : -1;
  plan.decode_config = 0;
  plan.splits = 1;
  if (!plan.prefill_tiles && shape.rows > 0) {
    // Row tiles: split each row's keys until a full batch of slots fills the GPU once (one wave: every block
    // starts at once, so the per-block start-up latency is paid once), in parts of at least kMinSplitKeys keys.
    // Sized from the slots, not the rows: a row's result must not depend on how many padding rows its batch
    // carries, so a CUDA-graph replay of a padded batch and the eager forward of the exact one agree.
    const int heads_per_block = plan.tensor_cores ? (group < 16 ? group : 16) : SimtHeadsPerBlock(group);
    const int per_sm = plan.tensor_cores ? TcRowBlocksPerSm(shape.head_dim) : kSimtBlocksPerSm;
    const int64_t blocks = shape.bsz * shape.num_kv_heads * ((group + heads_per_block - 1) / heads_per_block);
    int64_t wanted = static_cast<int64_t>(per_sm > 0 ? per_sm : 1) * MultiprocessorCount() / blocks;
    int warps = 1;
    if (plan.tensor_cores) {
      // One-warp blocks would need splits (a second kernel and partials in global memory): blocks whose warps
      // split each row's keys instead, merged in the block, split across blocks only past a wave of them.
      const int named = DecodeTcFromEnv();
      plan.decode_config = named < 0 ? -1 : wanted >= 2 ? named : 0;
      if (plan.decode_config > 0) {
        const TcDecodeFit fit = TcDecodeFitOf(plan.decode_config, shape.head_dim);
        warps = fit.warps;
        wanted = static_cast<int64_t>(fit.blocks_per_sm > 0 ? fit.blocks_per_sm : 1) * MultiprocessorCount() / blocks;
      }
    }
    const int64_t part_keys = static_cast<int64_t>(kMinSplitKeys) * warps;
    const int64_t most = (shape.max_model_len + part_keys - 1) / part_keys;
    const int64_t splits = wanted < most ? wanted : most;
    plan.splits = static_cast<int>(splits < 1 ? 1 : splits > kMaxSplits ? kMaxSplits : splits);
  }
  plan.workspace_floats =
      plan.splits > 1 ? shape.rows * shape.num_q_heads * plan.splits * (static_cast<int64_t>(shape.head_dim) + 2) : 0;
  return plan;
}

template <typename S>
cudaError_t LaunchAttention(const S* qkv, const S* key_cache, const S* value_cache, const int32_t* batch_id_per_token,
                            const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                            float scale, const AttentionPlan& plan, float* workspace, S* out, cudaStream_t stream) {
  if (shape.rows == 0) return cudaSuccess;
  if (shape.head_dim > kMaxHeadDimCuda || (plan.splits > 1 && workspace == nullptr) ||
      (plan.prefill_tiles && plan.prefill_config < 0) || (plan.tensor_cores && plan.decode_config < 0)) {
    return cudaErrorInvalidValue;
  }
  AttentionArgs<S> a{};
  a.qkv = qkv;
  a.key_cache = key_cache;
  a.value_cache = value_cache;
  a.batch = batch_id_per_token;
  a.cu = cu_seqlens_q;
  a.dec = seq_lens_decoder;
  a.shape = shape;
  a.scale_log2 = scale * 1.4426950408889634f;
  a.splits = plan.splits;
  a.out = out;
  a.partial_out = workspace;
  a.partial_ml = workspace == nullptr ? nullptr : workspace + shape.rows * shape.num_q_heads * plan.splits * shape.head_dim;
  cudaError_t err;
  if constexpr (std::is_same<S, half_bits>::value) {
    err = plan.tensor_cores ? LaunchTc(a, plan.prefill_tiles ? plan.prefill_config : -1, plan.decode_config, stream) : LaunchSimt(a, stream);
  } else {
    err = LaunchSimt(a, stream);
  }
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t pairs = shape.rows * shape.num_q_heads;
  CombineSplitsKernel<S><<<static_cast<unsigned>((pairs + kCombineWarps - 1) / kCombineWarps), kCombineWarps * 32, 0,
                           stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t LaunchWriteKvCache<float>(const float*, float*, float*, const int32_t*, const int32_t*,
                                               const int32_t*, AttentionShape, cudaStream_t);
template cudaError_t LaunchWriteKvCache<uint16_t>(const uint16_t*, uint16_t*, uint16_t*, const int32_t*,
                                                  const int32_t*, const int32_t*, AttentionShape, cudaStream_t);
template cudaError_t LaunchAttention<float>(const float*, const float*, const float*, const int32_t*, const int32_t*,
                                            const int32_t*, AttentionShape, float, const AttentionPlan&, float*,
                                            float*, cudaStream_t);
template cudaError_t LaunchAttention<uint16_t>(const uint16_t*, const uint16_t*, const uint16_t*, const int32_t*,
                                               const int32_t*, const int32_t*, AttentionShape, float,
                                               const AttentionPlan&, float*, uint16_t*, cudaStream_t);

}  // namespace fdo::attention
