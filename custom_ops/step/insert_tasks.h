// The task layout and per-slot writes of insert_tasks, one definition for the CPU loop
// (insert_tasks.cc) and the CUDA kernels (insert_tasks.cu), and the CUDA launchers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../include/host_device.h"

namespace fdo::insert_tasks {

constexpr int kTaskFields = 6;  // a task_meta row: slot, start, len, prefill_len, step_idx, max_dec_len
constexpr int64_t kNoPreId = -1;  // what an inserted slot's pre_ids row holds until set_value_by_flags_and_idx writes

// The slot buffers insert_tasks writes.
struct SlotBuffers {
  int64_t* input_ids;  // [bsz, input_len]
  int64_t* pre_ids;  // [bsz, max_model_len]
  int32_t* seq_lens_this_time;
  int32_t* seq_lens_encoder;
  int32_t* seq_lens_decoder;
  int64_t* prompt_lens;
  int64_t* step_idx;
  int64_t* max_dec_len;
  bool* stop_flags;
  int64_t bsz, input_len, max_model_len;
};

FDO_HOST_DEVICE void PreemptSlot(const SlotBuffers& s, int64_t slot) {
  if (slot < 0 || slot >= s.bsz) return;
  s.stop_flags[slot] = true;
  s.seq_lens_this_time[slot] = s.seq_lens_encoder[slot] = s.seq_lens_decoder[slot] = 0;
}

// Whether a task row fits the buffers and its tokens lie within task_tokens[0, num_tokens).
FDO_HOST_DEVICE bool TaskFits(const SlotBuffers& s, const int64_t* row, int64_t offset, int64_t num_tokens) {
  return row[0] >= 0 && row[0] < s.bsz && row[2] >= 0 && row[2] <= s.input_len && offset >= 0 &&
         offset + row[2] <= num_tokens;
}

// Everything a task row sets in its slot except the tokens themselves.
FDO_HOST_DEVICE void WriteTaskFields(const SlotBuffers& s, const int64_t* row) {
  const int64_t slot = row[0];
  s.seq_lens_this_time[slot] = s.seq_lens_encoder[slot] = static_cast<int32_t>(row[2]);
  s.seq_lens_decoder[slot] = static_cast<int32_t>(row[1]);
  s.prompt_lens[slot] = row[3];
  s.step_idx[slot] = row[4];
  s.max_dec_len[slot] = row[5];
  s.stop_flags[slot] = false;
}

}  // namespace fdo::insert_tasks

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::insert_tasks {

// Copies `bytes` from pageable host memory to the device on `stream` (staged before it returns).
cudaError_t CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// Preemptions, then the tasks; task_meta, task_tokens and preempt_slots are device pointers.
cudaError_t LaunchInsertTasks(const SlotBuffers& slots, const int64_t* task_meta, int64_t num_tasks,
                              const int64_t* task_tokens, int64_t num_tokens, const int32_t* preempt_slots,
                              int64_t num_preempt, cudaStream_t stream);

}  // namespace fdo::insert_tasks
#endif
