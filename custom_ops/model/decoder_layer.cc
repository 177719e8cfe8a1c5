// decoder_layer: one layer of the synthetic decoder as one op, so a step costs the host one call per
// layer instead of nine. With a call per kernel the host's launch overhead sets the pace of a step on
// a fast GPU (FastDeploy avoids it with CUDA graphs); fused, the GPU does. Same kernels as the separate
// ops, GEMMs through gemm::Matmul and gemm::MatmulSiluMul (as FDOVERLAP_GEMM picks; with the decode GEMM
// silu_mul is gate_up's epilogue):
//   h, residual  = first_layer ? (fdo_rms_norm(x), x) : add_rms_norm(x, residual)       (attn_norm)
//   qkv = h @ qkv_weight; write_kv_cache(qkv); a = attention(qkv)
//   h, residual  = add_rms_norm(a @ out_weight, residual)                                (ffn_norm)
//   out          = silu_mul(h @ gate_up_weight) @ down_weight
// Outputs (out, residual_out); the KV caches are written in place. It calls the norm, attention and
// activation and gemm families directly, so fdoverlap_ops.cc includes it after them.
#include "../include/dispatch.h"

namespace fdo::decoder_layer {

constexpr const char* kDecoderLayer = "decoder_layer";

// The layer's own inputs; the batch and cache inputs are checked by the attention family it calls.
void CheckLayerWeights(const paddle::Tensor& x, const paddle::Tensor& residual, const paddle::Tensor& attn_norm,
                       const paddle::Tensor& qkv_weight, const paddle::Tensor& out_weight,
                       const paddle::Tensor& ffn_norm, const paddle::Tensor& gate_up_weight,
                       const paddle::Tensor& down_weight, int num_q_heads, int num_kv_heads, int head_dim) {
  const char* op = kDecoderLayer;
  CheckShape(op, "x", x, {-1, -1});
  const int64_t hidden = x.shape()[1];
  const int64_t q_width = static_cast<int64_t>(num_q_heads) * head_dim;
  const int64_t qkv_width = q_width + 2 * static_cast<int64_t>(num_kv_heads) * head_dim;
  CheckShape(op, "gate_up_weight", gate_up_weight, {hidden, -1});
  const int64_t ffn = gate_up_weight.shape()[1] / 2;
  const std::vector<std::pair<const char*, const paddle::Tensor*>> named = {
      {"residual", &residual},     {"attn_norm", &attn_norm},           {"qkv_weight", &qkv_weight},
      {"out_weight", &out_weight}, {"ffn_norm", &ffn_norm},             {"gate_up_weight", &gate_up_weight},
      {"down_weight", &down_weight}};
  const std::vector<std::vector<int64_t>> shapes = {{x.shape()[0], hidden}, {hidden},       {hidden, qkv_width},
                                                    {q_width, hidden},      {hidden},       {hidden, 2 * ffn},
                                                    {ffn, hidden}};
  for (size_t i = 0; i < named.size(); ++i) {
    CheckShape(op, named[i].first, *named[i].second, shapes[i]);
    CheckSameDtype(op, named[i].first, *named[i].second, "x", x);
    CheckSamePlace(op, named[i].first, *named[i].second, "x", x);
  }
}

std::vector<paddle::Tensor> DecoderLayer(const paddle::Tensor& x, const paddle::Tensor& residual,
                                         const paddle::Tensor& attn_norm, const paddle::Tensor& qkv_weight,
                                         const paddle::Tensor& out_weight, const paddle::Tensor& ffn_norm,
                                         const paddle::Tensor& gate_up_weight, const paddle::Tensor& down_weight,
                                         paddle::Tensor& key_cache, paddle::Tensor& value_cache,
                                         const paddle::Tensor& batch_id_per_token, const paddle::Tensor& cu_seqlens_q,
                                         const paddle::Tensor& seq_lens_decoder, int num_q_heads, int num_kv_heads,
                                         int head_dim, float eps, float scale, bool first_layer) {
  const char* op = kDecoderLayer;
  const auto matmul = [op](const paddle::Tensor& a, const paddle::Tensor& b) { return gemm::Matmul(op, a, b); };
  CheckLayerWeights(x, residual, attn_norm, qkv_weight, out_weight, ffn_norm, gate_up_weight, down_weight,
                    num_q_heads, num_kv_heads, head_dim);
  const std::vector<paddle::Tensor> attn_in =
      first_layer ? std::vector<paddle::Tensor>{norm::RmsNorm(x, attn_norm, eps)[0], x}
                  : norm::AddRmsNorm(x, residual, attn_norm, eps);
  const paddle::Tensor qkv = matmul(attn_in[0], qkv_weight);
  attention::WriteKvCache(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q, seq_lens_decoder,
                          num_q_heads, num_kv_heads, head_dim);
  const paddle::Tensor attn = attention::Attention(qkv, key_cache, value_cache, batch_id_per_token, cu_seqlens_q,
                                                   seq_lens_decoder, num_q_heads, num_kv_heads, head_dim, scale)[0];
  const std::vector<paddle::Tensor> ffn_in = norm::AddRmsNorm(matmul(attn, out_weight), attn_in[1], ffn_norm, eps);
  const paddle::Tensor out = matmul(gemm::MatmulSiluMul(op, ffn_in[0], gate_up_weight), down_weight);
  return {out, ffn_in[1]};
}

}  // namespace fdo::decoder_layer

PD_BUILD_OP(decoder_layer)
    .Inputs({"x", "residual", "attn_norm", "qkv_weight", "out_weight", "ffn_norm", "gate_up_weight", "down_weight",
             "key_cache", "value_cache", "batch_id_per_token", "cu_seqlens_q", "seq_lens_decoder"})
    .Outputs({"out", "residual_out", "key_cache_out", "value_cache_out"})
    .Attrs({"num_q_heads: int", "num_kv_heads: int", "head_dim: int", "eps: float", "scale: float",
            "first_layer: bool"})
    .SetInplaceMap({{"key_cache", "key_cache_out"}, {"value_cache", "value_cache_out"}})
    .SetKernelFn(PD_KERNEL(fdo::decoder_layer::DecoderLayer));
