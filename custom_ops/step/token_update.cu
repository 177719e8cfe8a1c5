// CUDA kernels of the token update ops: the per-slot rules of token_update.h, one thread per slot.
#include "../include/cuda_utils.cuh"
#include "token_update.h"

namespace fdo::token_update {

// One thread per slot runs `Rule` (a per-slot rule of token_update.h).
template <typename Args, void (*Rule)(const Args&, int64_t)>
__global__ void PerSlotKernel(Args args) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < args.bsz;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Rule(args, b);
  }
}

template <typename Args, void (*Rule)(const Args&, int64_t)>
cudaError_t LaunchPerSlot(const Args& args, cudaStream_t stream) {
  if (args.bsz == 0) return cudaSuccess;
  PerSlotKernel<Args, Rule><<<BlocksFor(args.bsz, 256), 256, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchSetValueByFlagsAndIdx(const SetValueArgs& args, cudaStream_t stream) {
  return LaunchPerSlot<SetValueArgs, SetValueForSlot>(args, stream);
}

cudaError_t LaunchSetStopValueMultiEnds(const SetStopArgs& args, cudaStream_t stream) {
  return LaunchPerSlot<SetStopArgs, SetStopForSlot>(args, stream);
}

// One block: a block-stride loop over the slots, then a count of the stopped ones.
__global__ void UpdateInputsKernel(UpdateInputsArgs args) {
  __shared__ unsigned long long stopped;
  if (threadIdx.x == 0) stopped = 0;
  __syncthreads();
  unsigned long long mine = 0;
  for (int64_t b = threadIdx.x; b < args.bsz; b += blockDim.x) mine += UpdateSlot(args, b) ? 1 : 0;
  atomicAdd(&stopped, mine);
  __syncthreads();
  if (threadIdx.x == 0) args.not_need_stop[0] = static_cast<int64_t>(stopped) < args.bsz;
}

cudaError_t LaunchUpdateInputs(const UpdateInputsArgs& args, cudaStream_t stream) {
  UpdateInputsKernel<<<1, 1024, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace fdo::token_update
