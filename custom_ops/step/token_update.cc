// The per-slot updates of postprocess, with FastDeploy's semantics:
//   set_value_by_flags_and_idx  write the token fed this step into pre_ids_all[b][step_idx[b]] (step_idx > 0)
//   set_stop_value_multi_ends   advance step_idx, apply max_dec_len and the end ids
//   update_inputs               FastDeploy's update_inputs_v1 without block tables
// Each slot's rule is a function of that slot's values only (update_inputs adds one reduction), written
// once in token_update.h for the CPU loop and the CUDA kernel (one thread per slot).
#include "../include/dispatch.h"
#include "token_update.h"

namespace fdo::token_update {

constexpr const char* kSetValue = "set_value_by_flags_and_idx";
constexpr const char* kSetStop = "set_stop_value_multi_ends";
constexpr const char* kUpdateInputs = "update_inputs";

// ------------------------------------------------------------------ set_value_by_flags_and_idx

// For a running slot with step_idx[b] > 0: pre_ids_all[b][step_idx[b]] = the last prompt token of the
// chunk (prefill, seq_lens_encoder[b] > 0: input_ids[b][enc - 1]) or input_ids[b][0] (decode), as
// FastDeploy's kernel (seq_lens_this_time is not read). Slots that are stopped or have enc == dec == 0
// are left alone, as is a step_idx outside (0, max_model_len); enc is clamped to the width of input_ids.
void SetValueByFlagsAndIdx(paddle::Tensor& pre_ids_all, const paddle::Tensor& input_ids,
                           const paddle::Tensor& seq_lens_this_time, const paddle::Tensor& seq_lens_encoder,
                           const paddle::Tensor& seq_lens_decoder, const paddle::Tensor& step_idx,
                           const paddle::Tensor& stop_flags) {
  const char* op = kSetValue;
  CheckDtype(op, "pre_ids_all", pre_ids_all, paddle::DataType::INT64);
  CheckShape(op, "pre_ids_all", pre_ids_all, {-1, -1});
  const int64_t bsz = pre_ids_all.shape()[0];
  const int64_t max_model_len = pre_ids_all.shape()[1];
  CheckInput(op, "input_ids", input_ids, paddle::DataType::INT64, {bsz, -1}, "pre_ids_all", pre_ids_all);
  const int64_t input_len = input_ids.shape()[1];
  CheckInput(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, {bsz}, "pre_ids_all", pre_ids_all);
  CheckInput(op, "seq_lens_encoder", seq_lens_encoder, paddle::DataType::INT32, {bsz}, "pre_ids_all", pre_ids_all);
  CheckInput(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, {bsz}, "pre_ids_all", pre_ids_all);
  CheckInput(op, "step_idx", step_idx, paddle::DataType::INT64, {bsz}, "pre_ids_all", pre_ids_all);
  CheckInput(op, "stop_flags", stop_flags, paddle::DataType::BOOL, {bsz}, "pre_ids_all", pre_ids_all);

  const SetValueArgs args{pre_ids_all.data<int64_t>(),
                          input_ids.data<int64_t>(),
                          seq_lens_this_time.data<int32_t>(),
                          seq_lens_encoder.data<int32_t>(),
                          seq_lens_decoder.data<int32_t>(),
                          step_idx.data<int64_t>(),
                          stop_flags.data<bool>(),
                          bsz,
                          max_model_len,
                          input_len};
  if (RunsOnGpu(op, "pre_ids_all", pre_ids_all)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchSetValueByFlagsAndIdx(args, pre_ids_all.stream()));
#endif
    return;
  }
  for (int64_t b = 0; b < bsz; ++b) SetValueForSlot(args, b);
}

// ------------------------------------------------------------------ set_stop_value_multi_ends

// Per slot b (FastDeploy's rule, plus the chunked-prefill guard):
//   prefilling = this_time > 0 && dec + this_time < prompt_len      (a non-final chunk: no token)
//   if !stop && !prefilling: step_idx += 1; stop |= step_idx >= max_dec_len
//   stopped: token = -1 if the slot ran no tokens, else token = next = end_ids[0]
//   running: next = token
//   !prefilling && token in end_ids: stop = true, token = next = end_ids[0]
void SetStopValueMultiEnds(paddle::Tensor& sampled_token_ids, paddle::Tensor& stop_flags,
                           const paddle::Tensor& seq_lens_this_time, const paddle::Tensor& seq_lens_decoder,
                           const paddle::Tensor& prompt_lens, paddle::Tensor& step_idx,
                           const paddle::Tensor& max_dec_len, const paddle::Tensor& end_ids,
                           paddle::Tensor& next_tokens) {
  const char* op = kSetStop;
  const paddle::Tensor& ref = sampled_token_ids;
  CheckDtype(op, "sampled_token_ids", sampled_token_ids, paddle::DataType::INT64);
  CheckShape(op, "sampled_token_ids", sampled_token_ids, {-1, 1});
  const int64_t bsz = sampled_token_ids.shape()[0];
  CheckInput(op, "stop_flags", stop_flags, paddle::DataType::BOOL, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "prompt_lens", prompt_lens, paddle::DataType::INT64, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "step_idx", step_idx, paddle::DataType::INT64, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "max_dec_len", max_dec_len, paddle::DataType::INT64, {bsz}, "sampled_token_ids", ref);
  CheckInput(op, "end_ids", end_ids, paddle::DataType::INT64, {-1}, "sampled_token_ids", ref);
  PD_CHECK(end_ids.numel() >= 1, op, ": input 'end_ids' must hold at least one id");
  CheckInput(op, "next_tokens", next_tokens, paddle::DataType::INT64, {bsz, 1}, "sampled_token_ids", ref);
  const SetStopArgs args{sampled_token_ids.data<int64_t>(),
                         stop_flags.data<bool>(),
                         seq_lens_this_time.data<int32_t>(),
                         seq_lens_decoder.data<int32_t>(),
                         prompt_lens.data<int64_t>(),
                         step_idx.data<int64_t>(),
                         max_dec_len.data<int64_t>(),
                         end_ids.data<int64_t>(),
                         end_ids.numel(),
                         next_tokens.data<int64_t>(),
                         bsz};
  if (RunsOnGpu(op, "sampled_token_ids", sampled_token_ids)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchSetStopValueMultiEnds(args, sampled_token_ids.stream()));
#endif
    return;
  }
  for (int64_t b = 0; b < bsz; ++b) SetStopForSlot(args, b);
}

// ------------------------------------------------------------------ update_inputs

// Per slot b:
//   stopped:          token = -1 if its prompt was unfinished (this_time + dec < prompt_len); lengths = 0
//   finished prompt:  dec += this_time; this_time = 1; enc = 0; input_ids[b][0] = next   (also plain decode)
//   unfinished chunk: stop the slot until its next chunk is inserted; lengths = 0; token = -1
// then not_need_stop = (number of stopped slots) < bsz.
void UpdateInputs(paddle::Tensor& stop_flags, paddle::Tensor& not_need_stop, paddle::Tensor& seq_lens_this_time,
                  paddle::Tensor& seq_lens_encoder, paddle::Tensor& seq_lens_decoder, const paddle::Tensor& prompt_lens,
                  paddle::Tensor& sampled_token_ids, paddle::Tensor& input_ids, const paddle::Tensor& next_tokens) {
  const char* op = kUpdateInputs;
  const paddle::Tensor& ref = stop_flags;
  CheckDtype(op, "stop_flags", stop_flags, paddle::DataType::BOOL);
  CheckShape(op, "stop_flags", stop_flags, {-1});
  const int64_t bsz = stop_flags.shape()[0];
  CheckInput(op, "not_need_stop", not_need_stop, paddle::DataType::BOOL, {1}, "stop_flags", ref);
  CheckInput(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, {bsz}, "stop_flags", ref);
  CheckInput(op, "seq_lens_encoder", seq_lens_encoder, paddle::DataType::INT32, {bsz}, "stop_flags", ref);
  CheckInput(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, {bsz}, "stop_flags", ref);
  CheckInput(op, "prompt_lens", prompt_lens, paddle::DataType::INT64, {bsz}, "stop_flags", ref);
  CheckInput(op, "sampled_token_ids", sampled_token_ids, paddle::DataType::INT64, {bsz, 1}, "stop_flags", ref);
  CheckInput(op, "input_ids", input_ids, paddle::DataType::INT64, {bsz, -1}, "stop_flags", ref);
  CheckInput(op, "next_tokens", next_tokens, paddle::DataType::INT64, {bsz, 1}, "stop_flags", ref);
  const UpdateInputsArgs args{stop_flags.data<bool>(),
                              not_need_stop.data<bool>(),
                              seq_lens_this_time.data<int32_t>(),
                              seq_lens_encoder.data<int32_t>(),
                              seq_lens_decoder.data<int32_t>(),
                              prompt_lens.data<int64_t>(),
                              sampled_token_ids.data<int64_t>(),
                              input_ids.data<int64_t>(),
                              next_tokens.data<int64_t>(),
                              bsz,
                              input_ids.shape()[1]};
  if (RunsOnGpu(op, "stop_flags", stop_flags)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchUpdateInputs(args, stop_flags.stream()));
#endif
    return;
  }
  int64_t stopped = 0;
  for (int64_t b = 0; b < bsz; ++b) stopped += UpdateSlot(args, b) ? 1 : 0;
  args.not_need_stop[0] = stopped < bsz;
}

}  // namespace fdo::token_update

PD_BUILD_OP(set_value_by_flags_and_idx)
    .Inputs({"pre_ids_all", "input_ids", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder", "step_idx",
             "stop_flags"})
    .Outputs({"pre_ids_all_out"})
    .SetInplaceMap({{"pre_ids_all", "pre_ids_all_out"}})
    .SetKernelFn(PD_KERNEL(fdo::token_update::SetValueByFlagsAndIdx));

PD_BUILD_OP(set_stop_value_multi_ends)
    .Inputs({"sampled_token_ids", "stop_flags", "seq_lens_this_time", "seq_lens_decoder", "prompt_lens", "step_idx",
             "max_dec_len", "end_ids", "next_tokens"})
    .Outputs({"sampled_token_ids_out", "stop_flags_out", "step_idx_out", "next_tokens_out"})
    .SetInplaceMap({{"sampled_token_ids", "sampled_token_ids_out"},
                    {"stop_flags", "stop_flags_out"},
                    {"step_idx", "step_idx_out"},
                    {"next_tokens", "next_tokens_out"}})
    .SetKernelFn(PD_KERNEL(fdo::token_update::SetStopValueMultiEnds));

PD_BUILD_OP(update_inputs)
    .Inputs({"stop_flags", "not_need_stop", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder",
             "prompt_lens", "sampled_token_ids", "input_ids", "next_tokens"})
    .Outputs({"stop_flags_out", "not_need_stop_out", "seq_lens_this_time_out", "seq_lens_encoder_out",
              "seq_lens_decoder_out", "sampled_token_ids_out", "input_ids_out"})
    .SetInplaceMap({{"stop_flags", "stop_flags_out"},
                    {"not_need_stop", "not_need_stop_out"},
                    {"seq_lens_this_time", "seq_lens_this_time_out"},
                    {"seq_lens_encoder", "seq_lens_encoder_out"},
                    {"seq_lens_decoder", "seq_lens_decoder_out"},
                    {"sampled_token_ids", "sampled_token_ids_out"},
                    {"input_ids", "input_ids_out"}})
    .SetKernelFn(PD_KERNEL(fdo::token_update::UpdateInputs));
