// get_padding_offset: pack each slot's first seq_lens_this_time tokens into one row per token.
// rebuild_padding: the hidden state of each running slot's last token.
//
// Slot b's tokens occupy rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1, with
//   cu_seqlens_q[0] = 0, cu_seqlens_q[b+1] = cu_seqlens_q[b] + len(b), len(b) = clamp(seq_lens_this_time[b], 0, L).
// Rows past the real total are padding (id 2, batch -1, as FastDeploy's); a token_num below the real
// total drops the tokens that do not fit (the engine checks its predicted token count, the op does not).
#include <algorithm>

#include "../include/dispatch.h"
#include "padding.h"

namespace fdo::padding {

constexpr const char* kGetPaddingOffset = "get_padding_offset";
constexpr const char* kRebuildPadding = "rebuild_padding";

std::vector<paddle::Tensor> GetPaddingOffset(const paddle::Tensor& input_ids, const paddle::Tensor& seq_lens_this_time,
                                             int64_t token_num) {
  const char* op = kGetPaddingOffset;
  CheckDtype(op, "input_ids", input_ids, paddle::DataType::INT64);
  CheckShape(op, "input_ids", input_ids, {-1, -1});
  const int64_t bsz = input_ids.shape()[0];
  const int64_t max_len = input_ids.shape()[1];
  CheckInput(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, {bsz}, "input_ids", input_ids);
  PD_CHECK(token_num >= 0, op, ": attribute 'token_num' must be >= 0, got ", token_num);

  const auto place = input_ids.place();
  paddle::Tensor ids = EmptyOutput({token_num}, paddle::DataType::INT64, place);
  paddle::Tensor batch = EmptyOutput({token_num}, paddle::DataType::INT32, place);
  paddle::Tensor cu_q = paddle::empty({bsz + 1}, paddle::DataType::INT32, place);
  paddle::Tensor cu_k = paddle::empty({bsz + 1}, paddle::DataType::INT32, place);

  if (RunsOnGpu(op, "input_ids", input_ids)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchGetPaddingOffset(input_ids.data<int64_t>(), seq_lens_this_time.data<int32_t>(), bsz, max_len,
                                         token_num, ids.data<int64_t>(), batch.data<int32_t>(), cu_q.data<int32_t>(),
                                         cu_k.data<int32_t>(), input_ids.stream()));
#endif
    return {ids, batch, cu_q, cu_k};
  }

  const int64_t* src = input_ids.data<int64_t>();
  const int32_t* lens = seq_lens_this_time.data<int32_t>();
  int64_t* ids_out = ids.data<int64_t>();
  int32_t* batch_out = batch.data<int32_t>();
  int32_t* cu_q_out = cu_q.data<int32_t>();
  int32_t* cu_k_out = cu_k.data<int32_t>();
  std::fill(ids_out, ids_out + token_num, kPaddingTokenId);
  std::fill(batch_out, batch_out + token_num, kPaddingBatchId);
  int32_t total = 0;
  cu_q_out[0] = cu_k_out[0] = 0;
  for (int64_t b = 0; b < bsz; ++b) {
    const int64_t len = PackedLength(lens[b], max_len);
    for (int64_t t = 0; t < len && total + t < token_num; ++t) {
      ids_out[total + t] = src[b * max_len + t];
      batch_out[total + t] = static_cast<int32_t>(b);
    }
    total += static_cast<int32_t>(len);
    cu_q_out[b + 1] = cu_k_out[b + 1] = total;
  }
  return {ids, batch, cu_q, cu_k};
}

std::vector<paddle::Tensor> RebuildPadding(const paddle::Tensor& hidden, const paddle::Tensor& cu_seqlens_q,
                                           const paddle::Tensor& seq_lens_this_time) {
  const char* op = kRebuildPadding;
  CheckShape(op, "hidden", hidden, {-1, -1});
  const int64_t rows = hidden.shape()[0];
  const int64_t hidden_size = hidden.shape()[1];
  CheckDtype(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32);
  CheckShape(op, "seq_lens_this_time", seq_lens_this_time, {-1});
  const int64_t bsz = seq_lens_this_time.shape()[0];
  CheckInput(op, "cu_seqlens_q", cu_seqlens_q, paddle::DataType::INT32, {bsz + 1}, "hidden", hidden);
  CheckSamePlace(op, "seq_lens_this_time", seq_lens_this_time, "hidden", hidden);

  paddle::Tensor out = EmptyOutput({bsz, hidden_size}, hidden.dtype(), hidden.place());
  const bool on_gpu = RunsOnGpu(op, "hidden", hidden);
  DispatchFloat(op, "hidden", hidden, [&](auto type) {
    using S = typename decltype(type)::type;
    const S* src = FloatData<S>(hidden);
    S* dst = FloatData<S>(out);
    if (on_gpu) {
#ifdef PADDLE_WITH_CUDA
      CheckCuda(op, LaunchRebuildPadding<S>(src, cu_seqlens_q.data<int32_t>(), seq_lens_this_time.data<int32_t>(),
                                            rows, hidden_size, bsz, dst, hidden.stream()));
#endif
      return;
    }
    const int32_t* cu = cu_seqlens_q.data<int32_t>();
    const int32_t* lens = seq_lens_this_time.data<int32_t>();
    for (int64_t b = 0; b < bsz; ++b) {
      const int64_t row = LastRowOfSlot(cu, lens, b, rows);
      for (int64_t h = 0; h < hidden_size; ++h) dst[b * hidden_size + h] = row >= 0 ? src[row * hidden_size + h] : S{0};
    }
  });
  return {out};
}

}  // namespace fdo::padding

PD_BUILD_OP(get_padding_offset)
    .Inputs({"input_ids", "seq_lens_this_time"})
    .Outputs({"ids_remove_padding", "batch_id_per_token", "cu_seqlens_q", "cu_seqlens_k"})
    .Attrs({"token_num: int64_t"})
    .SetKernelFn(PD_KERNEL(fdo::padding::GetPaddingOffset));

PD_BUILD_OP(rebuild_padding)
    .Inputs({"hidden", "cu_seqlens_q", "seq_lens_this_time"})
    .Outputs({"out"})
    .SetKernelFn(PD_KERNEL(fdo::padding::RebuildPadding));
