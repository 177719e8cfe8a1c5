// write_kv_cache and attention over a per-slot KV cache [bsz, max_model_len, Hkv, D].
//
// qkv rows are [q heads (Hq*D) | k heads (Hkv*D) | v heads (Hkv*D)]. Row t of slot b = batch_id_per_token[t]
// sits at cache position p = seq_lens_decoder[b] + t - cu_seqlens_q[b]. Padding rows (b = -1) and rows
// whose p falls outside [0, max_model_len) are skipped by write_kv_cache and give zeros in attention.
//   write_kv_cache: key_cache[b][p][h] = k_h(t), value_cache[b][p][h] = v_h(t)
//   attention:      out[t][h] = sum_{j<=p} softmax_j(scale * q_h(t) . key_cache[b][j][g]) * value_cache[b][j][g]
//                   with g = h / (Hq / Hkv) (grouped-query attention); softmax and sums in float32.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

#include "../include/dispatch.h"
#include "attention.h"

namespace fdo::attention {

constexpr const char* kWriteKvCache = "write_kv_cache";
constexpr const char* kAttention = "attention";

AttentionShape CheckAttentionInputs(const char* op, const paddle::Tensor& qkv, const paddle::Tensor& key_cache,
                                    const paddle::Tensor& value_cache, const paddle::Tensor& batch_id_per_token,
                                    const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder,
                                    int num_q_heads, int num_kv_heads, int head_dim) {
  CheckPositive(op, "num_q_heads", num_q_heads);
  CheckPositive(op, "num_kv_heads", num_kv_heads);
  CheckPositive(op, "head_dim", head_dim);
  PD_CHECK(num_q_heads % num_kv_heads == 0, op, ": num_q_heads (", num_q_heads,
           ") must be a multiple of num_kv_heads (", num_kv_heads, ")");
  CheckShape(op, "key_cache", key_cache, {-1, -1, num_kv_heads, head_dim});
  AttentionShape shape{0, key_cache.shape()[0], key_cache.shape()[1], num_q_heads, num_kv_heads, head_dim};
  CheckShape(op, "qkv", qkv, {-1, shape.QkvWidth()});
  shape.rows = qkv.shape()[0];
  CheckShape(op, "value_cache", value_cache, key_cache.shape());
  CheckSameDtype(op, "key_cache", key_cache, "qkv", qkv);
  CheckSameDtype(op, "value_cache", value_cache, "qkv", qkv);
  CheckSamePlace(op, "key_cache", key_cache, "qkv", qkv);
  CheckSamePlace(op, "value_cache", value_cache, "qkv", qkv);
  CheckInput(op, "batch_id_per_token", batch_id_per_token, paddle::DataType::INT32, {shape.rows}, "qkv", qkv);
  CheckInput(op, "cu_seqlens_q", cu_seqlens_q, paddle::DataType::INT32, {shape.bsz + 1}, "qkv", qkv);
  CheckInput(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, {shape.bsz}, "qkv", qkv);
  return shape;
}

// ------------------------------------------------------------------ write_kv_cache

void WriteKvCache(const paddle::Tensor& qkv, paddle::Tensor& key_cache, paddle::Tensor& value_cache,
                  const paddle::Tensor& batch_id_per_token, const paddle::Tensor& cu_seqlens_q,
                  const paddle::Tensor& seq_lens_decoder, int num_q_heads, int num_kv_heads, int head_dim) {
  const char* op = kWriteKvCache;
  const AttentionShape shape = CheckAttentionInputs(op, qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q,
                                        seq_lens_decoder, num_q_heads, num_kv_heads, head_dim);
  const bool on_gpu = RunsOnGpu(op, "qkv", qkv);
  DispatchFloat(op, "qkv", qkv, [&](auto type) {
    using S = typename decltype(type)::type;
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchWriteKvCache<S>(FloatData<S>(qkv), FloatData<S>(key_cache), FloatData<S>(value_cache),
                                          batch_id_per_token.data<int32_t>(), cu_seqlens_q.data<int32_t>(),
                                          seq_lens_decoder.data<int32_t>(), shape, qkv.stream()));
#endif
      return;
    }
    const S* src = FloatData<S>(qkv);
    S* keys = FloatData<S>(key_cache);
    S* values = FloatData<S>(value_cache);
    const int32_t* batch = batch_id_per_token.data<int32_t>();
    const int32_t* cu = cu_seqlens_q.data<int32_t>();
    const int32_t* dec = seq_lens_decoder.data<int32_t>();
    const int64_t kv_width = shape.KvWidth();
    for (int64_t t = 0; t < shape.rows; ++t) {
      const int64_t p = shape.Position(t, batch, cu, dec);
      if (p < 0) continue;
      const S* k = src + t * shape.QkvWidth() + shape.QWidth();
      const S* v = k + kv_width;
      std::copy(k, k + kv_width, keys + shape.CacheOffset(batch[t], p, 0));
      std::copy(v, v + kv_width, values + shape.CacheOffset(batch[t], p, 0));
    }
  });
}

// ------------------------------------------------------------------ attention

// names as "a, b, c" (for the error of an unknown FDOVERLAP_PREFILL_TC or FDOVERLAP_DECODE_TC).
std::string NameList(const char* const* names, int count) {
  std::string list;
  for (int i = 0; i < count; ++i) list += (i ? ", " : "") + std::string(names[i]);
  return list;
}

template <typename S>
void AttentionOnCpu(const S* qkv, const S* keys, const S* values, const int32_t* batch, const int32_t* cu,
                    const int32_t* dec, const AttentionShape& shape, float scale, S* out) {
  const int64_t d_model = shape.QWidth();
  const int group = shape.num_q_heads / shape.num_kv_heads;
  std::vector<float> scores;
  std::vector<float> acc(static_cast<size_t>(shape.head_dim));
  for (int64_t t = 0; t < shape.rows; ++t) {
    S* out_row = out + t * d_model;
    const int64_t p = shape.Position(t, batch, cu, dec);
    if (p < 0) {
      std::fill(out_row, out_row + d_model, S{0});
      continue;
    }
    scores.resize(static_cast<size_t>(p + 1));
    for (int h = 0; h < shape.num_q_heads; ++h) {
      const S* q = qkv + t * shape.QkvWidth() + static_cast<int64_t>(h) * shape.head_dim;
      const int kv_head = h / group;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j <= p; ++j) {
        const S* k = keys + shape.CacheOffset(batch[t], j, kv_head);
        float dot = 0.0f;
        for (int d = 0; d < shape.head_dim; ++d) dot += ToFloat(q[d]) * ToFloat(k[d]);
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float total = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j <= p; ++j) {
        const float weight = std::exp(scores[j] - max_score);
        total += weight;
        const S* v = values + shape.CacheOffset(batch[t], j, kv_head);
        for (int d = 0; d < shape.head_dim; ++d) acc[d] += weight * ToFloat(v[d]);
      }
      for (int d = 0; d < shape.head_dim; ++d) out_row[h * shape.head_dim + d] = FromFloat<S>(acc[d] / total);
    }
  }
}

std::vector<paddle::Tensor> Attention(const paddle::Tensor& qkv, const paddle::Tensor& key_cache,
                                      const paddle::Tensor& value_cache, const paddle::Tensor& batch_id_per_token,
                                      const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder,
                                      int num_q_heads, int num_kv_heads, int head_dim, float scale) {
  const char* op = kAttention;
  const AttentionShape shape = CheckAttentionInputs(op, qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q,
                                        seq_lens_decoder, num_q_heads, num_kv_heads, head_dim);
  paddle::Tensor out = EmptyOutput({shape.rows, shape.QWidth()}, qkv.dtype(), qkv.place());
  const bool on_gpu = RunsOnGpu(op, "qkv", qkv);
  DispatchFloat(op, "qkv", qkv, [&](auto type) {
    using S = typename decltype(type)::type;
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      PD_CHECK(head_dim <= kMaxHeadDimCuda, op, ": head_dim ", head_dim, " is above the CUDA kernel's limit of ",
               kMaxHeadDimCuda);
      const AttentionPlan plan = PlanAttention(shape, std::is_same<S, half_bits>::value, scale, qkv.data(),
                                               key_cache.data(), value_cache.data());
      PD_CHECK(!plan.prefill_tiles || plan.prefill_config != kPrefillTcNotBuilt, op, ": ", kPrefillTcEnv, "=",
               std::getenv(kPrefillTcEnv), " needs the warpgroup-MMA kernels of an sm_90a (Hopper) build");
      PD_CHECK(!plan.prefill_tiles || plan.prefill_config >= 0, op, ": ", kPrefillTcEnv, "=",
               std::getenv(kPrefillTcEnv), " is not a prefill configuration (",
               NameList(kPrefillTcNames, kPrefillTcCount), ")");
      PD_CHECK(plan.decode_config >= 0, op, ": ", kDecodeTcEnv, "=", std::getenv(kDecodeTcEnv),
               " is not a decode configuration (", NameList(kDecodeTcNames, kDecodeTcCount), ")");
      paddle::Tensor workspace;
      if (plan.workspace_floats > 0) {
        workspace = paddle::empty({plan.workspace_floats}, paddle::DataType::FLOAT32, qkv.place());
      }
      CheckCuda(op, LaunchAttention<S>(FloatData<S>(qkv), FloatData<S>(key_cache), FloatData<S>(value_cache),
                                       batch_id_per_token.data<int32_t>(), cu_seqlens_q.data<int32_t>(),
                                       seq_lens_decoder.data<int32_t>(), shape, scale, plan,
                                       plan.workspace_floats > 0 ? workspace.data<float>() : nullptr,
                                       FloatData<S>(out), qkv.stream()));
#endif
      return;
    }
    AttentionOnCpu<S>(FloatData<S>(qkv), FloatData<S>(key_cache), FloatData<S>(value_cache),
                      batch_id_per_token.data<int32_t>(), cu_seqlens_q.data<int32_t>(),
                      seq_lens_decoder.data<int32_t>(), shape, scale, FloatData<S>(out));
  });
  return {out};
}

}  // namespace fdo::attention

PD_BUILD_OP(write_kv_cache)
    .Inputs({"qkv", "key_cache", "value_cache", "batch_id_per_token", "cu_seqlens_q", "seq_lens_decoder"})
    .Outputs({"key_cache_out", "value_cache_out"})
    .Attrs({"num_q_heads: int", "num_kv_heads: int", "head_dim: int"})
    .SetInplaceMap({{"key_cache", "key_cache_out"}, {"value_cache", "value_cache_out"}})
    .SetKernelFn(PD_KERNEL(fdo::attention::WriteKvCache));

PD_BUILD_OP(attention)
    .Inputs({"qkv", "key_cache", "value_cache", "batch_id_per_token", "cu_seqlens_q", "seq_lens_decoder"})
    .Outputs({"out"})
    .Attrs({"num_q_heads: int", "num_kv_heads: int", "head_dim: int", "scale: float"})
    .SetKernelFn(PD_KERNEL(fdo::attention::Attention));
