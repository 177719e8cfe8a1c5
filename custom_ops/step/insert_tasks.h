// The task row layout of insert_tasks, and its CUDA launchers (defined in insert_tasks.cu).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fdo::insert_tasks {

constexpr int kTaskFields = 6;  // slot, start, len, prefill_len, step_idx, max_dec_len

}  // namespace fdo::insert_tasks

#if defined(PADDLE_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>

namespace fdo::insert_tasks {

// Copies `bytes` from pageable host memory to the device on `stream` (staged before it returns).
cudaError_t CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream);

cudaError_t LaunchInsertTasks(int64_t* input_ids, int32_t* seq_lens_this_time, int32_t* seq_lens_encoder,
                              int32_t* seq_lens_decoder, int64_t* prompt_lens, int64_t* step_idx,
                              int64_t* max_dec_len, bool* stop_flags, int64_t bsz, int64_t input_len,
                              const int64_t* task_meta, int64_t num_tasks, const int64_t* task_tokens,
                              int64_t num_tokens, const int32_t* preempt_slots, int64_t num_preempt,
                              cudaStream_t stream);

}  // namespace fdo::insert_tasks
#endif
