// The per-slot rules of the padding ops, one definition for padding.cc and padding.cu, and the CUDA
// launchers (defined in padding.cu).
#pragma once

#include <cstdint>

#include "../include/host_device.h"

namespace fdo::padding {

// The token id and batch id of a padding row (FastDeploy's get_padding_offset fills padding ids with 2).
constexpr int64_t kPaddingTokenId = 2;
constexpr int32_t kPaddingBatchId = -1;

// Slot b's token count as packed: seq_lens_this_time[b] clamped to [0, max_len].
FDO_HOST_DEVICE int64_t PackedLength(int32_t seq_len_this_time, int64_t max_len) {
  const int64_t len = seq_len_this_time < 0 ? 0 : seq_len_this_time;
  return len < max_len ? len : max_len;
}

// The row of slot b's last token in the packed batch, or -1 when the slot ran no tokens.
FDO_HOST_DEVICE int64_t LastRowOfSlot(const int32_t* cu_seqlens_q, const int32_t* seq_lens_this_time, int64_t b,
                                      int64_t rows) {
  const int64_t row = static_cast<int64_t>(cu_seqlens_q[b + 1]) - 1;
  return seq_lens_this_time[b] > 0 && row >= 0 && row < rows ? row : -1;
}

}  // namespace fdo::padding

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::padding {

cudaError_t LaunchGetPaddingOffset(const int64_t* input_ids, const int32_t* seq_lens_this_time, int64_t bsz,
                                   int64_t max_len, int64_t token_num, int64_t* ids_remove_padding,
                                   int32_t* batch_id_per_token, int32_t* cu_seqlens_q, int32_t* cu_seqlens_k,
                                   cudaStream_t stream);

template <typename S>
cudaError_t LaunchRebuildPadding(const S* hidden, const int32_t* cu_seqlens_q, const int32_t* seq_lens_this_time,
                                 int64_t rows, int64_t hidden_size, int64_t bsz, S* out, cudaStream_t stream);

}  // namespace fdo::padding
#endif
