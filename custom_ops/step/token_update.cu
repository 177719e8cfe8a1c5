// CUDA kernels of the token update ops: one thread per slot (semantics in token_update.cc).
#include "../include/cuda_utils.cuh"
#include "token_update.h"

namespace fdo::token_update {

__global__ void SetValueByFlagsAndIdxKernel(int64_t* pre_ids_all, const int64_t* input_ids,
                                            const int32_t* seq_lens_this_time, const int32_t* seq_lens_encoder,
                                            const int32_t* seq_lens_decoder, const int64_t* step_idx,
                                            const bool* stop_flags, int64_t bsz, int64_t max_model_len,
                                            int64_t input_len) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < bsz;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t enc = seq_lens_encoder[b];
    if (stop_flags[b] || seq_lens_this_time[b] <= 0 || (enc == 0 && seq_lens_decoder[b] == 0)) continue;
    const int64_t step = step_idx[b];
    if (step < 0 || step >= max_model_len || input_len == 0) continue;
    const int64_t col = enc > 0 ? min(static_cast<int64_t>(enc), input_len) - 1 : 0;
    pre_ids_all[b * max_model_len + step] = input_ids[b * input_len + col];
  }
}

cudaError_t LaunchSetValueByFlagsAndIdx(int64_t* pre_ids_all, const int64_t* input_ids,
                                        const int32_t* seq_lens_this_time, const int32_t* seq_lens_encoder,
                                        const int32_t* seq_lens_decoder, const int64_t* step_idx,
                                        const bool* stop_flags, int64_t bsz, int64_t max_model_len,
                                        int64_t input_len, cudaStream_t stream) {
  if (bsz == 0) return cudaSuccess;
  SetValueByFlagsAndIdxKernel<<<BlocksFor(bsz, 256), 256, 0, stream>>>(
      pre_ids_all, input_ids, seq_lens_this_time, seq_lens_encoder, seq_lens_decoder, step_idx, stop_flags, bsz,
      max_model_len, input_len);
  return cudaGetLastError();
}

__global__ void SetStopValueMultiEndsKernel(int64_t* token, bool* stop, const int32_t* this_time, const int32_t* dec,
                                            const int64_t* prompt, int64_t* step, const int64_t* max_dec,
                                            const int64_t* ends, int64_t num_end_ids, int64_t* next, int64_t bsz) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < bsz;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool prefilling = this_time[b] > 0 && dec[b] + this_time[b] < prompt[b];
    bool stopped = stop[b];
    if (!stopped && !prefilling) {
      step[b] += 1;
      if (step[b] >= max_dec[b]) stopped = true;
    }
    int64_t tok = token[b];
    if (stopped) {
      if (this_time[b] == 0) {
        tok = -1;
      } else {
        tok = ends[0];
        next[b] = ends[0];
      }
    } else {
      next[b] = tok;
    }
    if (!prefilling) {
      for (int64_t e = 0; e < num_end_ids; ++e) {
        if (tok == ends[e]) {
          stopped = true;
          tok = ends[0];
          next[b] = ends[0];
          break;
        }
      }
    }
    token[b] = tok;
    stop[b] = stopped;
  }
}

cudaError_t LaunchSetStopValueMultiEnds(int64_t* sampled_token_ids, bool* stop_flags,
                                        const int32_t* seq_lens_this_time, const int32_t* seq_lens_decoder,
                                        const int64_t* prompt_lens, int64_t* step_idx, const int64_t* max_dec_len,
                                        const int64_t* end_ids, int64_t num_end_ids, int64_t* next_tokens,
                                        int64_t bsz, cudaStream_t stream) {
  if (bsz == 0) return cudaSuccess;
  SetStopValueMultiEndsKernel<<<BlocksFor(bsz, 256), 256, 0, stream>>>(
      sampled_token_ids, stop_flags, seq_lens_this_time, seq_lens_decoder, prompt_lens, step_idx, max_dec_len,
      end_ids, num_end_ids, next_tokens, bsz);
  return cudaGetLastError();
}

// One block: a block-stride loop over the slots, then a count of the stopped ones.
__global__ void UpdateInputsKernel(bool* stop, bool* not_need_stop, int32_t* this_time, int32_t* enc, int32_t* dec,
                                   const int64_t* prompt, int64_t* token, int64_t* input_ids, const int64_t* next,
                                   int64_t bsz, int64_t input_len) {
  __shared__ unsigned long long stopped;
  if (threadIdx.x == 0) stopped = 0;
  __syncthreads();
  unsigned long long mine = 0;
  for (int64_t b = threadIdx.x; b < bsz; b += blockDim.x) {
    const bool prompt_done = static_cast<int64_t>(this_time[b]) + dec[b] >= prompt[b];
    if (stop[b]) {
      if (!prompt_done) token[b] = -1;
      this_time[b] = enc[b] = dec[b] = 0;
    } else if (prompt_done) {
      dec[b] += this_time[b];
      this_time[b] = 1;
      enc[b] = 0;
      if (input_len > 0) input_ids[b * input_len] = next[b];
    } else {
      stop[b] = true;
      this_time[b] = enc[b] = dec[b] = 0;
      token[b] = -1;
    }
    mine += stop[b] ? 1 : 0;
  }
  atomicAdd(&stopped, mine);
  __syncthreads();
  if (threadIdx.x == 0) not_need_stop[0] = static_cast<int64_t>(stopped) < bsz;
}

cudaError_t LaunchUpdateInputs(bool* stop_flags, bool* not_need_stop, int32_t* seq_lens_this_time,
                               int32_t* seq_lens_encoder, int32_t* seq_lens_decoder, const int64_t* prompt_lens,
                               int64_t* sampled_token_ids, int64_t* input_ids, const int64_t* next_tokens,
                               int64_t bsz, int64_t input_len, cudaStream_t stream) {
  UpdateInputsKernel<<<1, 1024, 0, stream>>>(stop_flags, not_need_stop, seq_lens_this_time, seq_lens_encoder,
                                             seq_lens_decoder, prompt_lens, sampled_token_ids, input_ids, next_tokens,
                                             bsz, input_len);
  return cudaGetLastError();
}

}  // namespace fdo::token_update
