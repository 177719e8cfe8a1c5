// What the attention kernels share: their arguments, the split of a row's keys, the merge workspace.
#pragma once

#include <math_constants.h>

#include "../include/cuda_utils.cuh"
#include "../include/float_types.h"
#include "attention.h"

namespace fdo::attention {

constexpr int kSplitAlign = 32;  // split boundaries fall on multiples of this many keys (one decode MMA tile)

template <typename S>
struct AttentionArgs {
  const S* qkv;
  const S* key_cache;
  const S* value_cache;
  const int32_t* batch;
  const int32_t* cu;
  const int32_t* dec;
  AttentionShape shape;
  float scale_log2;    // scale * log2(e): scores are kept in log2 units and exponentiated with exp2
  int splits;          // parts of each row's keys (row tiles); 1: the kernel writes `out` itself
  int heads_per_tile;  // q heads of one KV head handled by one block
  int head_chunks;     // blocks per KV head: ceil(group / heads_per_tile)
  bool strays_only;    // row tiles: skip the rows a prefill tile owns
  S* out;
  float* partial_out;  // [rows, Hq, splits, D]: unnormalised sums of each split
  float* partial_ml;   // [rows, Hq, splits, 2]: (running max in log2 units, sum of weights) of each split

  __host__ __device__ __forceinline__ int Group() const { return shape.num_q_heads / shape.num_kv_heads; }
  __device__ __forceinline__ int64_t PartialIndex(int64_t t, int head, int split) const {
    return (t * shape.num_q_heads + head) * splits + split;
  }
  // An empty split: weight 0, so the combine kernel ignores it.
  __device__ __forceinline__ void WriteEmptyPartial(int64_t t, int head, int split) const {
    const int64_t i = PartialIndex(t, head, split);
    partial_ml[2 * i] = -CUDART_INF_F;
    partial_ml[2 * i + 1] = 0.0f;
  }
};

struct KeyRange {
  int64_t begin;
  int64_t end;
};

// Keys [begin, end) of split `split` out of `splits` equal parts of keys 0..n-1 (parts rounded up to kSplitAlign).
__device__ __forceinline__ KeyRange SplitRange(int64_t n, int split, int splits) {
  int64_t part = (n + splits - 1) / splits;
  part = (part + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
  const int64_t begin = split * part;
  return {begin, begin + part < n ? begin + part : n};
}

// Keys of SplitRange's parts [first, first + count) of `splits`, together.
__device__ __forceinline__ KeyRange SplitRanges(int64_t n, int first, int count, int splits) {
  return {SplitRange(n, first, splits).begin, SplitRange(n, first + count - 1, splits).end};
}

}  // namespace fdo::attention
