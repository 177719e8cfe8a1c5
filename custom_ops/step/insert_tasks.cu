// CUDA kernels of insert_tasks (semantics in insert_tasks.cc): preemptions, then one block per task.
#include "../include/cuda_utils.cuh"
#include "insert_tasks.h"

namespace fdo::insert_tasks {

cudaError_t CopyHostToDeviceAsync(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
}

__global__ void PreemptKernel(SlotBuffers slots, const int32_t* preempt_slots, int64_t num_preempt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_preempt;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    PreemptSlot(slots, preempt_slots[i]);
  }
}

// Block i inserts task row i; its tokens start after the tokens of rows 0..i-1.
__global__ void InsertTaskKernel(SlotBuffers slots, const int64_t* task_meta, const int64_t* task_tokens,
                                 int64_t num_tokens) {
  __shared__ int64_t offset;
  const int64_t task = blockIdx.x;
  if (threadIdx.x == 0) {
    int64_t sum = 0;
    for (int64_t i = 0; i < task; ++i) sum += task_meta[i * kTaskFields + 2];
    offset = sum;
  }
  __syncthreads();
  const int64_t* row = task_meta + task * kTaskFields;
  if (!TaskFits(slots, row, offset, num_tokens)) return;
  int64_t* ids = slots.input_ids + row[0] * slots.input_len;
  for (int64_t t = threadIdx.x; t < row[2]; t += blockDim.x) ids[t] = task_tokens[offset + t];
  int64_t* pre_ids = slots.pre_ids + row[0] * slots.max_model_len;
  for (int64_t t = threadIdx.x; t < slots.max_model_len; t += blockDim.x) pre_ids[t] = kNoPreId;
  if (threadIdx.x == 0) WriteTaskFields(slots, row);
}

cudaError_t LaunchInsertTasks(const SlotBuffers& slots, const int64_t* task_meta, int64_t num_tasks,
                              const int64_t* task_tokens, int64_t num_tokens, const int32_t* preempt_slots,
                              int64_t num_preempt, cudaStream_t stream) {
  if (num_preempt > 0) {
    PreemptKernel<<<BlocksFor(num_preempt, 256), 256, 0, stream>>>(slots, preempt_slots, num_preempt);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (num_tasks > 0) {
    InsertTaskKernel<<<static_cast<unsigned>(num_tasks), 256, 0, stream>>>(slots, task_meta, task_tokens, num_tokens);
  }
  return cudaGetLastError();
}

}  // namespace fdo::insert_tasks
