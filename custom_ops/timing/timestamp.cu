// CUDA side of record_timestamp and clock_samples (semantics in timestamp.cc).
#include "../include/cuda_utils.cuh"
#include "../include/host_clock.h"
#include "timestamp.h"

namespace fdo::timing {

__device__ __forceinline__ int64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return static_cast<int64_t>(t);
}

__global__ void RecordTimestampKernel(int64_t* slot) { *slot = GlobalTimerNs(); }

cudaError_t LaunchRecordTimestamp(int64_t* slot, cudaStream_t stream) {
  RecordTimestampKernel<<<1, 1, 0, stream>>>(slot);
  return cudaGetLastError();
}

// Shared by the host and the kernel through mapped pinned memory. request: the sample the host asks
// for (1-based; -1 tells the kernel to stop); ack: the last sample the kernel answered.
struct Mailbox {
  int32_t request;
  int32_t ack;
  int64_t device_time;
};

__global__ void PingPongKernel(volatile Mailbox* box, int samples) {
  for (int i = 1; i <= samples; ++i) {
    int32_t request;
    while ((request = box->request) != i) {
      if (request < 0) return;
    }
    box->device_time = GlobalTimerNs();
    __threadfence_system();
    box->ack = i;
  }
}

cudaError_t ClockSamplesCuda(int samples, double timeout_s, int64_t* rows, bool* timed_out) {
  *timed_out = false;
  Mailbox* host_box = nullptr;
  Mailbox* device_box = nullptr;
  cudaStream_t stream = nullptr;
  cudaError_t err = cudaHostAlloc(&host_box, sizeof(Mailbox), cudaHostAllocMapped | cudaHostAllocPortable);
  if (err != cudaSuccess) return err;
  volatile Mailbox* box = host_box;
  box->request = 0;
  box->ack = 0;
  box->device_time = 0;
  err = cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_box), host_box, 0);
  if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err == cudaSuccess) {
    PingPongKernel<<<1, 1, 0, stream>>>(device_box, samples);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) {
    const int64_t deadline = MonotonicNs() + static_cast<int64_t>(timeout_s * 1e9);
    for (int i = 1; i <= samples && !*timed_out; ++i) {
      const int64_t before = MonotonicNs();
      __sync_synchronize();
      box->request = i;
      __sync_synchronize();
      while (box->ack != i) {
        if (MonotonicNs() > deadline) {
          *timed_out = true;
          box->request = -1;
          __sync_synchronize();
          break;
        }
      }
      const int64_t after = MonotonicNs();
      rows[3 * (i - 1)] = before;
      rows[3 * (i - 1) + 1] = box->device_time;
      rows[3 * (i - 1) + 2] = after;
    }
    const cudaError_t sync = cudaStreamSynchronize(stream);
    if (err == cudaSuccess) err = sync;
  }
  if (stream != nullptr) cudaStreamDestroy(stream);
  cudaFreeHost(host_box);
  return err;
}

}  // namespace fdo::timing
