// CUDA launchers of the padding ops (defined in padding.cu, called from padding.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::padding {

cudaError_t LaunchGetPaddingOffset(const int64_t* input_ids, const int32_t* seq_lens_this_time, int64_t bsz,
                                   int64_t max_len, int64_t token_num, int64_t* ids_remove_padding,
                                   int32_t* batch_id_per_token, int32_t* cu_seqlens_q, int32_t* cu_seqlens_k,
                                   cudaStream_t stream);

template <typename S>
cudaError_t LaunchRebuildPadding(const S* hidden, const int32_t* cu_seqlens_q, const int32_t* seq_lens_this_time,
                                 int64_t rows, int64_t hidden_size, int64_t bsz, S* out, cudaStream_t stream);

}  // namespace fdo::padding
