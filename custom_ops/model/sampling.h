// The ranking of greedy sampling, shared by the CPU and CUDA kernels, and the CUDA launcher.
#pragma once

#include <cstdint>

#include "../include/host_device.h"

namespace fdo::sampling {

// A candidate token. tier: 1 a number, 0 a NaN logit (below every number), -1 none (banned or empty).
struct Candidate {
  int tier;
  float value;
  int64_t id;
};

FDO_HOST_DEVICE Candidate MakeCandidate(float value, int64_t id, int64_t banned_token_id) {
  if (id == banned_token_id) return {-1, 0.0f, INT64_MAX};
  if (value != value) return {0, 0.0f, id};
  return {1, value, id};
}

// A total order: the higher tier, then the larger value, then the lower id wins. Being a total
// order, any reduction tree picks the same winner, so CPU and CUDA agree on ties.
FDO_HOST_DEVICE bool Better(const Candidate& a, const Candidate& b) {
  if (a.tier != b.tier) return a.tier > b.tier;
  if (a.tier == 1 && a.value != b.value) return a.value > b.value;
  return a.id < b.id;
}

}  // namespace fdo::sampling

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::sampling {

template <typename S>
cudaError_t LaunchSampleGreedy(const S* logits, int64_t bsz, int64_t vocab, int64_t banned_token_id, int64_t* out,
                               cudaStream_t stream);

}  // namespace fdo::sampling
#endif
