// CUDA kernels of get_padding_offset and rebuild_padding (semantics in padding.cc).
#include "../include/cuda_utils.cuh"
#include "padding.h"

namespace fdo::padding {

// One block: thread 0 computes the prefix sums, then the block fills the rows.
__global__ void GetPaddingOffsetKernel(const int64_t* input_ids, const int32_t* seq_lens_this_time, int64_t bsz,
                                       int64_t max_len, int64_t token_num, int64_t* ids_remove_padding,
                                       int32_t* batch_id_per_token, int32_t* cu_seqlens_q, int32_t* cu_seqlens_k) {
  if (threadIdx.x == 0) {
    int32_t total = 0;
    cu_seqlens_q[0] = cu_seqlens_k[0] = 0;
    for (int64_t b = 0; b < bsz; ++b) {
      const int64_t len = PackedLength(seq_lens_this_time[b], max_len);
      total += static_cast<int32_t>(len);
      cu_seqlens_q[b + 1] = cu_seqlens_k[b + 1] = total;
    }
  }
  __syncthreads();
  const int32_t total = cu_seqlens_q[bsz];
  for (int64_t row = threadIdx.x; row < token_num; row += blockDim.x) {
    if (row >= total) {
      ids_remove_padding[row] = kPaddingTokenId;
      batch_id_per_token[row] = kPaddingBatchId;
      continue;
    }
    // The slot of this row: the largest b with cu_seqlens_q[b] <= row.
    int64_t lo = 0, hi = bsz;
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (cu_seqlens_q[mid] <= row) lo = mid; else hi = mid;
    }
    ids_remove_padding[row] = input_ids[lo * max_len + (row - cu_seqlens_q[lo])];
    batch_id_per_token[row] = static_cast<int32_t>(lo);
  }
}

cudaError_t LaunchGetPaddingOffset(const int64_t* input_ids, const int32_t* seq_lens_this_time, int64_t bsz,
                                   int64_t max_len, int64_t token_num, int64_t* ids_remove_padding,
                                   int32_t* batch_id_per_token, int32_t* cu_seqlens_q, int32_t* cu_seqlens_k,
                                   cudaStream_t stream) {
  GetPaddingOffsetKernel<<<1, 1024, 0, stream>>>(input_ids, seq_lens_this_time, bsz, max_len, token_num,
                                                 ids_remove_padding, batch_id_per_token, cu_seqlens_q, cu_seqlens_k);
  return cudaGetLastError();
}

template <typename S>
__global__ void RebuildPaddingKernel(const S* hidden, const int32_t* cu_seqlens_q, const int32_t* seq_lens_this_time,
                                     int64_t rows, int64_t hidden_size, S* out) {
  const int64_t b = blockIdx.x;
  const int64_t row = LastRowOfSlot(cu_seqlens_q, seq_lens_this_time, b, rows);
  for (int64_t h = threadIdx.x; h < hidden_size; h += blockDim.x) {
    out[b * hidden_size + h] = row >= 0 ? hidden[row * hidden_size + h] : S{0};
  }
}

template <typename S>
cudaError_t LaunchRebuildPadding(const S* hidden, const int32_t* cu_seqlens_q, const int32_t* seq_lens_this_time,
                                 int64_t rows, int64_t hidden_size, int64_t bsz, S* out, cudaStream_t stream) {
  if (bsz == 0) return cudaSuccess;
  RebuildPaddingKernel<S><<<static_cast<unsigned>(bsz), 256, 0, stream>>>(hidden, cu_seqlens_q, seq_lens_this_time,
                                                                           rows, hidden_size, out);
  return cudaGetLastError();
}

template cudaError_t LaunchRebuildPadding<float>(const float*, const int32_t*, const int32_t*, int64_t, int64_t,
                                                 int64_t, float*, cudaStream_t);
template cudaError_t LaunchRebuildPadding<uint16_t>(const uint16_t*, const int32_t*, const int32_t*, int64_t, int64_t,
                                                    int64_t, uint16_t*, cudaStream_t);

}  // namespace fdo::padding
