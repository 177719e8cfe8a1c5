// CUDA kernel of sample_greedy: one block per row, a block reduction under the order of sampling.h.
#include "../include/cuda_utils.cuh"
#include "sampling.h"

namespace fdo::sampling {

constexpr int kThreads = 256;

template <typename S>
__global__ void SampleGreedyKernel(const S* logits, int64_t vocab, int64_t banned_token_id, int64_t* out) {
  __shared__ Candidate best[kThreads];
  const S* row = logits + blockIdx.x * vocab;
  Candidate mine{-1, 0.0f, INT64_MAX};
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const Candidate c = MakeCandidate(LoadFloat(row[v]), v, banned_token_id);
    if (Better(c, mine)) mine = c;
  }
  best[threadIdx.x] = mine;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride && Better(best[threadIdx.x + stride], best[threadIdx.x])) {
      best[threadIdx.x] = best[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = best[0].tier < 0 ? -1 : best[0].id;
}

template <typename S>
cudaError_t LaunchSampleGreedy(const S* logits, int64_t bsz, int64_t vocab, int64_t banned_token_id, int64_t* out,
                               cudaStream_t stream) {
  if (bsz == 0) return cudaSuccess;
  SampleGreedyKernel<S><<<static_cast<unsigned>(bsz), kThreads, 0, stream>>>(logits, vocab, banned_token_id, out);
  return cudaGetLastError();
}

template cudaError_t LaunchSampleGreedy<float>(const float*, int64_t, int64_t, int64_t, int64_t*, cudaStream_t);
template cudaError_t LaunchSampleGreedy<uint16_t>(const uint16_t*, int64_t, int64_t, int64_t, int64_t*,
                                                  cudaStream_t);

}  // namespace fdo::sampling
