// The layout shared by the attention kernels, and their CUDA launchers (defined in attention.cu).
#pragma once

#include <cstdint>

#include "../include/host_device.h"

namespace fdo::attention {

constexpr int kMaxHeadDimCuda = 256;  // the SIMT and combine kernels keep a head's dims in registers

// The tensor-core kernel's prefill tile configurations (attention_tc_launch.cuh says what each is). The
// environment variable FDOVERLAP_PREFILL_TC names the one a call uses, read at each call's plan (so a
// process can switch, and a CUDA graph keeps the one it was captured with); unset or empty: the default.
// fdoverlap_cli/kernel_choices.py mirrors these names (tests/ops check that).
constexpr const char* kPrefillTcEnv = "FDOVERLAP_PREFILL_TC";
// The names from kPrefillTcFirstWg on are warpgroup-MMA kernels (attention_wg.cuh), built only for sm_90a.
constexpr const char* kPrefillTcNames[] = {"w4m2n64", "w4m2n32q", "w8m1n64", "w8m2n64", "w4m2n64s3",
                                           "wg3n128", "wg3n64",  "wg2n128"};
constexpr int kPrefillTcCount = static_cast<int>(sizeof(kPrefillTcNames) / sizeof(kPrefillTcNames[0]));
constexpr int kPrefillTcFirstWg = 5;
// The fastest at 2k and 4k tokens on an H200 (benchmarks/kernels.py --prefill-configs all): wg3n64 where
// the build has the warpgroup kernels (322 / 414 TFLOP/s), else w8m2n64 (228 / 279).
#ifdef FDO_WGMMA
constexpr int kPrefillTcDefault = 6;
#else
constexpr int kPrefillTcDefault = 3;
#endif
// Its decode configurations, likewise by FDOVERLAP_DECODE_TC: "rows" is one warp a block (the keys split
// across blocks and merged by a second kernel), the others split each block's keys among its warps too.
constexpr const char* kDecodeTcEnv = "FDOVERLAP_DECODE_TC";
constexpr const char* kDecodeTcNames[] = {"rows", "w4n32", "w8n16"};
constexpr int kDecodeTcCount = static_cast<int>(sizeof(kDecodeTcNames) / sizeof(kDecodeTcNames[0]));
constexpr int kDecodeTcDefault = 1;

// qkv rows of [q heads | k heads | v heads] and a cache [bsz, max_model_len, num_kv_heads, head_dim].
struct AttentionShape {
  int64_t rows;
  int64_t bsz;
  int64_t max_model_len;
  int num_q_heads;
  int num_kv_heads;
  int head_dim;

  FDO_HOST_DEVICE int64_t QkvWidth() const { return static_cast<int64_t>(num_q_heads + 2 * num_kv_heads) * head_dim; }
  FDO_HOST_DEVICE int64_t KvWidth() const { return static_cast<int64_t>(num_kv_heads) * head_dim; }
  FDO_HOST_DEVICE int64_t QWidth() const { return static_cast<int64_t>(num_q_heads) * head_dim; }

  // The cache position of row t (seq_lens_decoder[b] + t - cu_seqlens_q[b]), or -1 for a padding row
  // or a position outside the cache.
  FDO_HOST_DEVICE int64_t Position(int64_t t, const int32_t* batch, const int32_t* cu, const int32_t* dec) const {
    const int32_t b = batch[t];
    if (b < 0 || b >= bsz) return -1;
    const int64_t p = static_cast<int64_t>(dec[b]) + t - cu[b];
    return p >= 0 && p < max_model_len ? p : -1;
  }

  FDO_HOST_DEVICE int64_t CacheOffset(int64_t b, int64_t p, int64_t kv_head) const {
    return ((b * max_model_len + p) * num_kv_heads + kv_head) * head_dim;
  }
};

}  // namespace fdo::attention

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::attention {

// How the CUDA attention runs one call, chosen on the host from the shapes and the pointers alone (never
// from device data, so that a call can be captured in a CUDA graph):
//  - tensor_cores: float16 with head_dim % 8 == 0 and <= 128 runs the float16 MMA kernel (the q heads
//    that share a KV head are rows of one MMA tile); anything else the SIMT kernel.
//    Needs scale > 0 (the kernel takes the max of the unscaled scores).
//  - prefill_tiles (tensor cores, more rows than slots): tiles of consecutive rows of one slot, each
//    tile streaming its slot's KV once for all its rows; a second pass handles the rows no tile owns
//    (padding rows, rows outside their slot's range of cu_seqlens_q). Otherwise each row is its own
//    tile (decode).
//  - decode_config (tensor cores, row tiles): a block of one warp (0, "rows") while the slots fill the GPU
//    alone, else blocks whose warps split each row's keys (FDOVERLAP_DECODE_TC's choice).
//  - splits: row tiles split the KV length into this many parts (flash-decoding) when there are too
//    few rows to fill the GPU; a combine kernel merges the parts through `workspace_floats` floats.
struct AttentionPlan {
  bool tensor_cores;
  bool prefill_tiles;
  int prefill_config;  // prefill_tiles: the index in kPrefillTcNames that FDOVERLAP_PREFILL_TC names, -1 if unknown
  int decode_config;   // row tiles: the index in kDecodeTcNames (FDOVERLAP_DECODE_TC's when it is used), -1 if unknown
  int splits;
  int64_t workspace_floats;
};

AttentionPlan PlanAttention(const AttentionShape& shape, bool float16, float scale, const void* qkv,
                            const void* key_cache, const void* value_cache);

// The index in kPrefillTcNames of the configuration FDOVERLAP_PREFILL_TC names (the default when unset or
// empty), -1 for an unknown name, kPrefillTcNotBuilt for a warpgroup kernel this build does not have;
// DecodeTcFromEnv likewise for FDOVERLAP_DECODE_TC and kDecodeTcNames (no kPrefillTcNotBuilt).
constexpr int kPrefillTcNotBuilt = -2;
int PrefillTcFromEnv();
int DecodeTcFromEnv();

template <typename S>
cudaError_t LaunchWriteKvCache(const S* qkv, S* key_cache, S* value_cache, const int32_t* batch_id_per_token,
                               const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                               cudaStream_t stream);

// `workspace`: plan.workspace_floats floats of device memory (null when that is 0).
template <typename S>
cudaError_t LaunchAttention(const S* qkv, const S* key_cache, const S* value_cache, const int32_t* batch_id_per_token,
                            const int32_t* cu_seqlens_q, const int32_t* seq_lens_decoder, AttentionShape shape,
                            float scale, const AttentionPlan& plan, float* workspace, S* out, cudaStream_t stream);

}  // namespace fdo::attention
#endif
