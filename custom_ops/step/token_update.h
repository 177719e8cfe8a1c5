// CUDA launchers of the token update ops (defined in token_update.cu, called from token_update.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::token_update {

cudaError_t LaunchSetValueByFlagsAndIdx(int64_t* pre_ids_all, const int64_t* input_ids,
                                        const int32_t* seq_lens_this_time, const int32_t* seq_lens_encoder,
                                        const int32_t* seq_lens_decoder, const int64_t* step_idx,
                                        const bool* stop_flags, int64_t bsz, int64_t max_model_len,
                                        int64_t input_len, cudaStream_t stream);

cudaError_t LaunchSetStopValueMultiEnds(int64_t* sampled_token_ids, bool* stop_flags,
                                        const int32_t* seq_lens_this_time, const int32_t* seq_lens_decoder,
                                        const int64_t* prompt_lens, int64_t* step_idx, const int64_t* max_dec_len,
                                        const int64_t* end_ids, int64_t num_end_ids, int64_t* next_tokens,
                                        int64_t bsz, cudaStream_t stream);

cudaError_t LaunchUpdateInputs(bool* stop_flags, bool* not_need_stop, int32_t* seq_lens_this_time,
                               int32_t* seq_lens_encoder, int32_t* seq_lens_decoder, const int64_t* prompt_lens,
                               int64_t* sampled_token_ids, int64_t* input_ids, const int64_t* next_tokens,
                               int64_t bsz, int64_t input_len, cudaStream_t stream);

}  // namespace fdo::token_update
