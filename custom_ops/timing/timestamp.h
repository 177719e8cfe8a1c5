// CUDA side of the timing ops (defined in timestamp.cu, called from timestamp.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fdo::timing {

// A one-thread kernel on `stream` that writes the GPU global timer (ns) into *slot.
cudaError_t LaunchRecordTimestamp(int64_t* slot, cudaStream_t stream);

// Fills rows[i] = (host_before, device_time, host_after), i < samples, by a ping-pong with a kernel on
// a private stream through mapped pinned memory. Sets *timed_out when the kernel did not answer
// within timeout_s (for example because the GPU is busy with a long kernel).
cudaError_t ClockSamplesCuda(int samples, double timeout_s, int64_t* rows, bool* timed_out);

}  // namespace fdo::timing
