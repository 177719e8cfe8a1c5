// FDO_HOST_DEVICE marks small inline functions shared by the CPU kernels and the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define FDO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FDO_HOST_DEVICE inline
#endif
