// insert_tasks: FastDeploy's insert of new and resumed requests into their slots, as one op so that
// no paddle setitem runs on the GPU.
//
// Preemptions first: each slot in preempt_slots is stopped with zero lengths. Then each task row
// (slot, start, len, prefill_len, step_idx, max_dec_len), its tokens taken in row order from task_tokens:
//   input_ids[slot][:len] = tokens; pre_ids[slot][:] = -1; this_time = enc = len; dec = start;
//   prompt_lens = prefill_len; step_idx, max_dec_len as given; stop = false.
// (FastDeploy's insert resets the pre_ids row of every prefill task it inserts, chunk or resume alike.)
// Task tensors on the CPU are checked row by row (slot range, lengths, no slot twice) and, when the
// buffers are on the GPU, uploaded on the buffers' stream. Task tensors already on the GPU cannot be
// checked on the host; the kernel skips rows that are out of range.
#include <algorithm>
#include <vector>

#include "../include/dispatch.h"
#include "insert_tasks.h"

namespace fdo::insert_tasks {

constexpr const char* kInsertTasks = "insert_tasks";

void CheckTasksOnHost(const paddle::Tensor& task_meta, const paddle::Tensor& task_tokens,
                      const paddle::Tensor& preempt_slots, int64_t bsz, int64_t input_len) {
  const char* op = kInsertTasks;
  const int32_t* preempt = preempt_slots.data<int32_t>();
  for (int64_t i = 0; i < preempt_slots.numel(); ++i) {
    PD_CHECK(preempt[i] >= 0 && preempt[i] < bsz, op, ": preempt_slots[", i, "] = ", preempt[i],
             " is outside [0, ", bsz, ")");
  }
  const int64_t* meta = task_meta.data<int64_t>();
  std::vector<bool> taken(static_cast<size_t>(bsz), false);
  int64_t total = 0;
  for (int64_t i = 0; i < task_meta.shape()[0]; ++i) {
    const int64_t* row = meta + i * kTaskFields;
    PD_CHECK(row[0] >= 0 && row[0] < bsz, op, ": task_meta row ", i, ": slot ", row[0], " is outside [0, ", bsz,
             ")");
    PD_CHECK(!taken[row[0]], op, ": task_meta row ", i, ": slot ", row[0], " is inserted twice");
    taken[row[0]] = true;
    PD_CHECK(row[1] >= 0, op, ": task_meta row ", i, ": start ", row[1], " is negative");
    PD_CHECK(row[2] >= 0 && row[2] <= input_len, op, ": task_meta row ", i, ": len ", row[2],
             " is outside [0, ", input_len, "] (the width of input_ids)");
    total += row[2];
  }
  PD_CHECK(total == task_tokens.numel(), op, ": input 'task_tokens' must hold the ", total,
           " tokens that task_meta's lengths add up to, got ", task_tokens.numel());
}

void InsertOnCpu(const SlotBuffers& slots, const paddle::Tensor& task_meta, const paddle::Tensor& task_tokens,
                 const paddle::Tensor& preempt_slots) {
  const int32_t* preempt = preempt_slots.data<int32_t>();
  for (int64_t i = 0; i < preempt_slots.numel(); ++i) PreemptSlot(slots, preempt[i]);
  const int64_t* meta = task_meta.data<int64_t>();
  const int64_t* tokens = task_tokens.data<int64_t>();
  int64_t offset = 0;
  for (int64_t i = 0; i < task_meta.shape()[0]; ++i) {
    const int64_t* row = meta + i * kTaskFields;
    std::copy(tokens + offset, tokens + offset + row[2], slots.input_ids + row[0] * slots.input_len);
    int64_t* pre_ids = slots.pre_ids + row[0] * slots.max_model_len;
    std::fill(pre_ids, pre_ids + slots.max_model_len, kNoPreId);
    offset += row[2];
    WriteTaskFields(slots, row);
  }
}

#ifdef PADDLE_WITH_CUDA
// `t` on the device: as it is when it already is, else a device copy made on `stream`.
paddle::Tensor OnDevice(const paddle::Tensor& t, const paddle::Tensor& buffers, cudaStream_t stream) {
  if (t.is_gpu() || t.numel() == 0) return t;
  paddle::Tensor copy = paddle::empty(t.shape(), t.dtype(), buffers.place());
  const size_t bytes = static_cast<size_t>(t.numel()) * (t.dtype() == paddle::DataType::INT64 ? 8 : 4);
  CheckCuda(kInsertTasks, CopyHostToDeviceAsync(copy.data(), t.data(), bytes, stream));
  return copy;
}
#endif

void InsertTasks(paddle::Tensor& input_ids, paddle::Tensor& pre_ids, paddle::Tensor& seq_lens_this_time,
                 paddle::Tensor& seq_lens_encoder, paddle::Tensor& seq_lens_decoder, paddle::Tensor& prompt_lens,
                 paddle::Tensor& step_idx, paddle::Tensor& max_dec_len, paddle::Tensor& stop_flags,
                 const paddle::Tensor& task_meta, const paddle::Tensor& task_tokens,
                 const paddle::Tensor& preempt_slots) {
  const char* op = kInsertTasks;
  const paddle::Tensor& ref = input_ids;
  CheckDtype(op, "input_ids", input_ids, paddle::DataType::INT64);
  CheckShape(op, "input_ids", input_ids, {-1, -1});
  const int64_t bsz = input_ids.shape()[0];
  const int64_t input_len = input_ids.shape()[1];
  CheckInput(op, "pre_ids", pre_ids, paddle::DataType::INT64, {bsz, -1}, "input_ids", ref);
  const struct {
    const char* name;
    const paddle::Tensor& tensor;
    paddle::DataType dtype;
  } per_slot[] = {
      {"seq_lens_this_time", seq_lens_this_time, paddle::DataType::INT32},
      {"seq_lens_encoder", seq_lens_encoder, paddle::DataType::INT32},
      {"seq_lens_decoder", seq_lens_decoder, paddle::DataType::INT32},
      {"prompt_lens", prompt_lens, paddle::DataType::INT64},
      {"step_idx", step_idx, paddle::DataType::INT64},
      {"max_dec_len", max_dec_len, paddle::DataType::INT64},
      {"stop_flags", stop_flags, paddle::DataType::BOOL},
  };
  for (const auto& buffer : per_slot) CheckInput(op, buffer.name, buffer.tensor, buffer.dtype, {bsz}, "input_ids", ref);
  CheckDtype(op, "task_meta", task_meta, paddle::DataType::INT64);
  CheckShape(op, "task_meta", task_meta, {-1, kTaskFields});
  CheckDtype(op, "task_tokens", task_tokens, paddle::DataType::INT64);
  CheckShape(op, "task_tokens", task_tokens, {-1});
  CheckDtype(op, "preempt_slots", preempt_slots, paddle::DataType::INT32);
  CheckShape(op, "preempt_slots", preempt_slots, {-1});

  const bool on_gpu = RunsOnGpu(op, "input_ids", input_ids);
  const paddle::Tensor* task_tensors[] = {&task_meta, &task_tokens, &preempt_slots};
  const char* task_names[] = {"task_meta", "task_tokens", "preempt_slots"};
  bool tasks_on_host = true;
  for (int i = 0; i < 3; ++i) {
    const paddle::Tensor& t = *task_tensors[i];
    PD_CHECK(t.is_cpu() || (on_gpu && t.is_gpu()), op, ": input '", task_names[i],
             "' must be a (pageable) CPU tensor or sit where 'input_ids' sits, got a tensor on ", PlaceName(t));
    tasks_on_host = tasks_on_host && t.is_cpu();
  }
  if (tasks_on_host) CheckTasksOnHost(task_meta, task_tokens, preempt_slots, bsz, input_len);

  const SlotBuffers slots{input_ids.data<int64_t>(),
                          pre_ids.data<int64_t>(),
                          seq_lens_this_time.data<int32_t>(),
                          seq_lens_encoder.data<int32_t>(),
                          seq_lens_decoder.data<int32_t>(),
                          prompt_lens.data<int64_t>(),
                          step_idx.data<int64_t>(),
                          max_dec_len.data<int64_t>(),
                          stop_flags.data<bool>(),
                          bsz,
                          input_len,
                          pre_ids.shape()[1]};
  if (!on_gpu) {
    InsertOnCpu(slots, task_meta, task_tokens, preempt_slots);
    return;
  }
#ifdef PADDLE_WITH_CUDA
  if (task_meta.numel() == 0 && preempt_slots.numel() == 0) return;
  cudaStream_t stream = input_ids.stream();
  const paddle::Tensor meta = OnDevice(task_meta, input_ids, stream);
  const paddle::Tensor tokens = OnDevice(task_tokens, input_ids, stream);
  const paddle::Tensor preempt = OnDevice(preempt_slots, input_ids, stream);
  CheckCuda(op, LaunchInsertTasks(slots, meta.data<int64_t>(), task_meta.shape()[0], tokens.data<int64_t>(),
                                  task_tokens.numel(), preempt.data<int32_t>(), preempt_slots.numel(), stream));
#endif
}

}  // namespace fdo::insert_tasks

PD_BUILD_OP(insert_tasks)
    .Inputs({"input_ids", "pre_ids", "seq_lens_this_time", "seq_lens_encoder", "seq_lens_decoder", "prompt_lens",
             "step_idx", "max_dec_len", "stop_flags", "task_meta", "task_tokens", "preempt_slots"})
    .Outputs({"input_ids_out", "pre_ids_out", "seq_lens_this_time_out", "seq_lens_encoder_out",
              "seq_lens_decoder_out", "prompt_lens_out", "step_idx_out", "max_dec_len_out", "stop_flags_out"})
    .SetInplaceMap({{"input_ids", "input_ids_out"},
                    {"pre_ids", "pre_ids_out"},
                    {"seq_lens_this_time", "seq_lens_this_time_out"},
                    {"seq_lens_encoder", "seq_lens_encoder_out"},
                    {"seq_lens_decoder", "seq_lens_decoder_out"},
                    {"prompt_lens", "prompt_lens_out"},
                    {"step_idx", "step_idx_out"},
                    {"max_dec_len", "max_dec_len_out"},
                    {"stop_flags", "stop_flags_out"}})
    .SetKernelFn(PD_KERNEL(fdo::insert_tasks::InsertTasks));
