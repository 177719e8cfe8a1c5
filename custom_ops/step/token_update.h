// The per-slot rules of the token update ops, one definition for the CPU loops (token_update.cc) and
// the CUDA kernels (token_update.cu), and the CUDA launchers. Semantics are stated in token_update.cc.
#pragma once

#include <cstdint>

#include "../include/host_device.h"

namespace fdo::token_update {

struct SetValueArgs {
  int64_t* pre_ids_all;  // [bsz, max_model_len]
  const int64_t* input_ids;  // [bsz, input_len]
  const int32_t* seq_lens_this_time;
  const int32_t* seq_lens_encoder;
  const int32_t* seq_lens_decoder;
  const int64_t* step_idx;
  const bool* stop_flags;
  int64_t bsz, max_model_len, input_len;
};

FDO_HOST_DEVICE void SetValueForSlot(const SetValueArgs& a, int64_t b) {
  const int32_t enc = a.seq_lens_encoder[b];
  if (a.stop_flags[b] || (enc == 0 && a.seq_lens_decoder[b] == 0)) return;
  const int64_t step = a.step_idx[b];
  if (step <= 0 || step >= a.max_model_len || a.input_len == 0) return;
  const int64_t col = enc <= 0 ? 0 : (enc < a.input_len ? enc : a.input_len) - 1;
  a.pre_ids_all[b * a.max_model_len + step] = a.input_ids[b * a.input_len + col];
}

struct SetStopArgs {
  int64_t* sampled_token_ids;  // [bsz, 1]
  bool* stop_flags;
  const int32_t* seq_lens_this_time;
  const int32_t* seq_lens_decoder;
  const int64_t* prompt_lens;
  int64_t* step_idx;
  const int64_t* max_dec_len;
  const int64_t* end_ids;  // [num_end_ids >= 1]
  int64_t num_end_ids;
  int64_t* next_tokens;  // [bsz, 1]
  int64_t bsz;
};

FDO_HOST_DEVICE void SetStopForSlot(const SetStopArgs& a, int64_t b) {
  const int32_t this_time = a.seq_lens_this_time[b];
  const bool prefilling = this_time > 0 && a.seq_lens_decoder[b] + this_time < a.prompt_lens[b];
  bool stop = a.stop_flags[b];
  if (!stop && !prefilling) {
    a.step_idx[b] += 1;
    if (a.step_idx[b] >= a.max_dec_len[b]) stop = true;
  }
  int64_t token = a.sampled_token_ids[b];
  if (stop) {
    if (this_time == 0) {
      token = -1;
    } else {
      token = a.end_ids[0];
      a.next_tokens[b] = a.end_ids[0];
    }
  } else {
    a.next_tokens[b] = token;
  }
  for (int64_t e = 0; !prefilling && e < a.num_end_ids; ++e) {
    if (token == a.end_ids[e]) {
      stop = true;
      token = a.end_ids[0];
      a.next_tokens[b] = a.end_ids[0];
      break;
    }
  }
  a.sampled_token_ids[b] = token;
  a.stop_flags[b] = stop;
}

struct UpdateInputsArgs {
  bool* stop_flags;
  bool* not_need_stop;  // [1]
  int32_t* seq_lens_this_time;
  int32_t* seq_lens_encoder;
  int32_t* seq_lens_decoder;
  const int64_t* prompt_lens;
  int64_t* sampled_token_ids;  // [bsz, 1]
  int64_t* input_ids;  // [bsz, input_len]
  const int64_t* next_tokens;  // [bsz, 1]
  int64_t bsz, input_len;
};

// Updates slot b; returns whether it is stopped afterwards (for the not_need_stop reduction).
FDO_HOST_DEVICE bool UpdateSlot(const UpdateInputsArgs& a, int64_t b) {
  const bool prompt_done = static_cast<int64_t>(a.seq_lens_this_time[b]) + a.seq_lens_decoder[b] >= a.prompt_lens[b];
  if (a.stop_flags[b]) {
    if (!prompt_done) a.sampled_token_ids[b] = -1;
    a.seq_lens_this_time[b] = a.seq_lens_encoder[b] = a.seq_lens_decoder[b] = 0;
  } else if (prompt_done) {
    a.seq_lens_decoder[b] += a.seq_lens_this_time[b];
    a.seq_lens_this_time[b] = 1;
    a.seq_lens_encoder[b] = 0;
    if (a.input_len > 0) a.input_ids[b * a.input_len] = a.next_tokens[b];
  } else {
    a.stop_flags[b] = true;
    a.seq_lens_this_time[b] = a.seq_lens_encoder[b] = a.seq_lens_decoder[b] = 0;
    a.sampled_token_ids[b] = -1;
  }
  return a.stop_flags[b];
}

}  // namespace fdo::token_update

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::token_update {

cudaError_t LaunchSetValueByFlagsAndIdx(const SetValueArgs& args, cudaStream_t stream);
cudaError_t LaunchSetStopValueMultiEnds(const SetStopArgs& args, cudaStream_t stream);
cudaError_t LaunchUpdateInputs(const UpdateInputsArgs& args, cudaStream_t stream);

}  // namespace fdo::token_update
#endif
