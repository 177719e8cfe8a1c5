// The per-slot updates of postprocess, with FastDeploy's semantics:
//   set_value_by_flags_and_idx  write the token fed this step into pre_ids_all[b][step_idx[b]]
//   set_stop_value_multi_ends   advance step_idx, apply max_dec_len and the end ids
//   update_inputs               FastDeploy's update_inputs_v1 without block tables
// Each slot's rule is a function of that slot's values only (update_inputs adds one reduction), so
// the CPU loop and the CUDA kernel (one thread per slot) compute the same integers.
#include "../include/dispatch.h"

#ifdef PADDLE_WITH_CUDA
#include "token_update.h"
#endif

namespace fdo::token_update {

constexpr const char* kSetValue = "set_value_by_flags_and_idx";
constexpr const char* kSetStop = "set_stop_value_multi_ends";
constexpr const char* kUpdateInputs = "update_inputs";

// A per-slot vector input: shape [bsz] (or [bsz, 1]), the given dtype, on the place of `ref`.
void CheckSlots(const char* op, const char* input, const paddle::Tensor& t, paddle::DataType dtype, int64_t bsz,
                const char* ref_name, const paddle::Tensor& ref, bool column = false) {
  CheckDtype(op, input, t, dtype);
  if (column) {
    CheckShape(op, input, t, {bsz, 1});
  } else {
    CheckShape(op, input, t, {bsz});
  }
  CheckSamePlace(op, input, t, ref_name, ref);
}

// ------------------------------------------------------------------ set_value_by_flags_and_idx

// For a running slot that was fed tokens this step: pre_ids_all[b][step_idx[b]] = the last prompt
// token of the chunk (prefill, seq_lens_encoder[b] > 0: input_ids[b][enc - 1]) or input_ids[b][0]
// (decode). Slots that are stopped, fed nothing, or have enc == dec == 0 are left alone, as is a
// step_idx outside [0, max_model_len).
void SetValueByFlagsAndIdx(paddle::Tensor& pre_ids_all, const paddle::Tensor& input_ids,
                           const paddle::Tensor& seq_lens_this_time, const paddle::Tensor& seq_lens_encoder,
                           const paddle::Tensor& seq_lens_decoder, const paddle::Tensor& step_idx,
                           const paddle::Tensor& stop_flags) {
  const char* op = kSetValue;
  CheckDtype(op, "pre_ids_all", pre_ids_all, paddle::DataType::INT64);
  CheckShape(op, "pre_ids_all", pre_ids_all, {-1, -1});
  const int64_t bsz = pre_ids_all.shape()[0];
  const int64_t max_model_len = pre_ids_all.shape()[1];
  CheckDtype(op, "input_ids", input_ids, paddle::DataType::INT64);
  CheckShape(op, "input_ids", input_ids, {bsz, -1});
  CheckSamePlace(op, "input_ids", input_ids, "pre_ids_all", pre_ids_all);
  const int64_t input_len = input_ids.shape()[1];
  CheckSlots(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, bsz, "pre_ids_all", pre_ids_all);
  CheckSlots(op, "seq_lens_encoder", seq_lens_encoder, paddle::DataType::INT32, bsz, "pre_ids_all", pre_ids_all);
  CheckSlots(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, bsz, "pre_ids_all", pre_ids_all);
  CheckSlots(op, "step_idx", step_idx, paddle::DataType::INT64, bsz, "pre_ids_all", pre_ids_all);
  CheckSlots(op, "stop_flags", stop_flags, paddle::DataType::BOOL, bsz, "pre_ids_all", pre_ids_all);

  if (RunsOnGpu(op, "pre_ids_all", pre_ids_all)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchSetValueByFlagsAndIdx(pre_ids_all.data<int64_t>(), input_ids.data<int64_t>(),
                                              seq_lens_this_time.data<int32_t>(), seq_lens_encoder.data<int32_t>(),
                                              seq_lens_decoder.data<int32_t>(), step_idx.data<int64_t>(),
                                              stop_flags.data<bool>(), bsz, max_model_len, input_len,
                                              pre_ids_all.stream()));
#endif
    return;
  }
  int64_t* pre_ids = pre_ids_all.data<int64_t>();
  const int64_t* ids = input_ids.data<int64_t>();
  const int32_t* this_time = seq_lens_this_time.data<int32_t>();
  const int32_t* enc = seq_lens_encoder.data<int32_t>();
  const int32_t* dec = seq_lens_decoder.data<int32_t>();
  const int64_t* step = step_idx.data<int64_t>();
  const bool* stop = stop_flags.data<bool>();
  for (int64_t b = 0; b < bsz; ++b) {
    if (stop[b] || this_time[b] <= 0 || (enc[b] == 0 && dec[b] == 0)) continue;
    if (step[b] < 0 || step[b] >= max_model_len || input_len == 0) continue;
    const int64_t col = enc[b] > 0 ? std::min<int64_t>(enc[b], input_len) - 1 : 0;
    pre_ids[b * max_model_len + step[b]] = ids[b * input_len + col];
  }
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
  CheckSlots(op, "stop_flags", stop_flags, paddle::DataType::BOOL, bsz, "sampled_token_ids", ref);
  CheckSlots(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, bsz, "sampled_token_ids", ref);
  CheckSlots(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, bsz, "sampled_token_ids", ref);
  CheckSlots(op, "prompt_lens", prompt_lens, paddle::DataType::INT64, bsz, "sampled_token_ids", ref);
  CheckSlots(op, "step_idx", step_idx, paddle::DataType::INT64, bsz, "sampled_token_ids", ref);
  CheckSlots(op, "max_dec_len", max_dec_len, paddle::DataType::INT64, bsz, "sampled_token_ids", ref);
  CheckDtype(op, "end_ids", end_ids, paddle::DataType::INT64);
  CheckShape(op, "end_ids", end_ids, {-1});
  PD_CHECK(end_ids.numel() >= 1, op, ": input 'end_ids' must hold at least one id");
  CheckSamePlace(op, "end_ids", end_ids, "sampled_token_ids", ref);
  CheckSlots(op, "next_tokens", next_tokens, paddle::DataType::INT64, bsz, "sampled_token_ids", ref, true);
  const int64_t num_end_ids = end_ids.numel();

  if (RunsOnGpu(op, "sampled_token_ids", sampled_token_ids)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchSetStopValueMultiEnds(sampled_token_ids.data<int64_t>(), stop_flags.data<bool>(),
                                              seq_lens_this_time.data<int32_t>(), seq_lens_decoder.data<int32_t>(),
                                              prompt_lens.data<int64_t>(), step_idx.data<int64_t>(),
                                              max_dec_len.data<int64_t>(), end_ids.data<int64_t>(), num_end_ids,
                                              next_tokens.data<int64_t>(), bsz, sampled_token_ids.stream()));
#endif
    return;
  }
  int64_t* token = sampled_token_ids.data<int64_t>();
  bool* stop = stop_flags.data<bool>();
  const int32_t* this_time = seq_lens_this_time.data<int32_t>();
  const int32_t* dec = seq_lens_decoder.data<int32_t>();
  const int64_t* prompt = prompt_lens.data<int64_t>();
  int64_t* step = step_idx.data<int64_t>();
  const int64_t* max_dec = max_dec_len.data<int64_t>();
  const int64_t* ends = end_ids.data<int64_t>();
  int64_t* next = next_tokens.data<int64_t>();
  for (int64_t b = 0; b < bsz; ++b) {
    const bool prefilling = this_time[b] > 0 && dec[b] + this_time[b] < prompt[b];
    if (!stop[b] && !prefilling) {
      step[b] += 1;
      if (step[b] >= max_dec[b]) stop[b] = true;
    }
    if (stop[b]) {
      if (this_time[b] == 0) {
        token[b] = -1;
      } else {
        token[b] = ends[0];
        next[b] = ends[0];
      }
    } else {
      next[b] = token[b];
    }
    if (prefilling) continue;
    for (int64_t e = 0; e < num_end_ids; ++e) {
      if (token[b] == ends[e]) {
        stop[b] = true;
        token[b] = ends[0];
        next[b] = ends[0];
        break;
      }
    }
  }
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
  CheckDtype(op, "not_need_stop", not_need_stop, paddle::DataType::BOOL);
  CheckNumel(op, "not_need_stop", not_need_stop, 1);
  CheckSamePlace(op, "not_need_stop", not_need_stop, "stop_flags", ref);
  CheckSlots(op, "seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32, bsz, "stop_flags", ref);
  CheckSlots(op, "seq_lens_encoder", seq_lens_encoder, paddle::DataType::INT32, bsz, "stop_flags", ref);
  CheckSlots(op, "seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32, bsz, "stop_flags", ref);
  CheckSlots(op, "prompt_lens", prompt_lens, paddle::DataType::INT64, bsz, "stop_flags", ref);
  CheckSlots(op, "sampled_token_ids", sampled_token_ids, paddle::DataType::INT64, bsz, "stop_flags", ref, true);
  CheckDtype(op, "input_ids", input_ids, paddle::DataType::INT64);
  CheckShape(op, "input_ids", input_ids, {bsz, -1});
  CheckSamePlace(op, "input_ids", input_ids, "stop_flags", ref);
  CheckSlots(op, "next_tokens", next_tokens, paddle::DataType::INT64, bsz, "stop_flags", ref, true);
  const int64_t input_len = input_ids.shape()[1];

  if (RunsOnGpu(op, "stop_flags", stop_flags)) {
#ifdef PADDLE_WITH_CUDA
    CheckCuda(op, LaunchUpdateInputs(stop_flags.data<bool>(), not_need_stop.data<bool>(),
                                     seq_lens_this_time.data<int32_t>(), seq_lens_encoder.data<int32_t>(),
                                     seq_lens_decoder.data<int32_t>(), prompt_lens.data<int64_t>(),
                                     sampled_token_ids.data<int64_t>(), input_ids.data<int64_t>(),
                                     next_tokens.data<int64_t>(), bsz, input_len, stop_flags.stream()));
#endif
    return;
  }
  bool* stop = stop_flags.data<bool>();
  int32_t* this_time = seq_lens_this_time.data<int32_t>();
  int32_t* enc = seq_lens_encoder.data<int32_t>();
  int32_t* dec = seq_lens_decoder.data<int32_t>();
  const int64_t* prompt = prompt_lens.data<int64_t>();
  int64_t* token = sampled_token_ids.data<int64_t>();
  int64_t* ids = input_ids.data<int64_t>();
  const int64_t* next = next_tokens.data<int64_t>();
  int64_t stopped = 0;
  for (int64_t b = 0; b < bsz; ++b) {
    const bool prompt_done = static_cast<int64_t>(this_time[b]) + dec[b] >= prompt[b];
    if (stop[b]) {
      if (!prompt_done) token[b] = -1;
      this_time[b] = enc[b] = dec[b] = 0;
    } else if (prompt_done) {
      dec[b] += this_time[b];
      this_time[b] = 1;
      enc[b] = 0;
      if (input_len > 0) ids[b * input_len] = next[b];
    } else {
      stop[b] = true;
      this_time[b] = enc[b] = dec[b] = 0;
      token[b] = -1;
    }
    stopped += stop[b] ? 1 : 0;
  }
  not_need_stop.data<bool>()[0] = stopped < bsz;
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
