// The CUDA kernels as one translation unit (one nvcc run per build). No paddle headers: the .cc files
// call these launchers under PADDLE_WITH_CUDA.
#include "model/activation.cu"
#include "model/attention.cu"
#include "model/embedding.cu"
#include "model/gemm.cu"
#include "model/gemm_decode.cu"
#include "model/init.cu"
#include "model/norm.cu"
#include "model/sampling.cu"
#include "step/insert_tasks.cu"
#include "step/padding.cu"
#include "step/token_update.cu"
#include "timing/timestamp.cu"
