// CUDA kernels of insert_tasks (semantics in insert_tasks.cc): preemptions, then one block per task.
#include "../include/cuda_utils.cuh"
#include "insert_tasks.h"

namespace fdo::insert_tasks {

cudaError_t CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
}

__global__ void PreemptKernel(int32_t* this_time, int32_t* enc, int32_t* dec, bool* stop, int64_t bsz,
                              const int32_t* preempt_slots, int64_t num_preempt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_preempt;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t slot = preempt_slots[i];
    if (slot < 0 || slot >= bsz) continue;
    stop[slot] = true;
    this_time[slot] = enc[slot] = dec[slot] = 0;
  }
}

__global__ void InsertTaskKernel(int64_t* input_ids, int32_t* this_time, int32_t* enc, int32_t* dec, int64_t* prompt,
                                 int64_t* step, int64_t* max_dec, bool* stop, int64_t bsz, int64_t input_len,
                                 const int64_t* task_meta, const int64_t* task_tokens, int64_t num_tokens) {
  __shared__ int64_t offset;
  const int64_t task = blockIdx.x;
  if (threadIdx.x == 0) {
    int64_t sum = 0;
    for (int64_t i = 0; i < task; ++i) sum += task_meta[i * kTaskFields + 2];
    offset = sum;
  }
  __syncthreads();
  const int64_t* row = task_meta + task * kTaskFields;
  const int64_t slot = row[0];
  const int64_t len = row[2];
  if (slot < 0 || slot >= bsz || len < 0 || len > input_len || offset < 0 || offset + len > num_tokens) return;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x) input_ids[slot * input_len + t] = task_tokens[offset + t];
  if (threadIdx.x == 0) {
    this_time[slot] = enc[slot] = static_cast<int32_t>(len);
    dec[slot] = static_cast<int32_t>(row[1]);
    prompt[slot] = row[3];
    step[slot] = row[4];
    max_dec[slot] = row[5];
    stop[slot] = false;
  }
}

cudaError_t LaunchInsertTasks(int64_t* input_ids, int32_t* seq_lens_this_time, int32_t* seq_lens_encoder,
                              int32_t* seq_lens_decoder, int64_t* prompt_lens, int64_t* step_idx,
                              int64_t* max_dec_len, bool* stop_flags, int64_t bsz, int64_t input_len,
                              const int64_t* task_meta, int64_t num_tasks, const int64_t* task_tokens,
                              int64_t num_tokens, const int32_t* preempt_slots, int64_t num_preempt,
                              cudaStream_t stream) {
  if (num_preempt > 0) {
    PreemptKernel<<<BlocksFor(num_preempt, 256), 256, 0, stream>>>(seq_lens_this_time, seq_lens_encoder,
                                                                   seq_lens_decoder, stop_flags, bsz, preempt_slots,
                                                                   num_preempt);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (num_tasks > 0) {
    InsertTaskKernel<<<static_cast<unsigned>(num_tasks), 256, 0, stream>>>(
        input_ids, seq_lens_this_time, seq_lens_encoder, seq_lens_decoder, prompt_lens, step_idx, max_dec_len,
        stop_flags, bsz, input_len, task_meta, task_tokens, num_tokens);
  }
  return cudaGetLastError();
}

}  // namespace fdo::insert_tasks
