// Warp-level tensor-core and asynchronous-copy primitives (sm_80 and newer, incl. sm_90) as inline PTX:
// cp.async of 16 bytes into shared memory, ldmatrix of 8x8 float16 tiles, and the float16 MMA
// m16n8k16 with float32 accumulators. Fragment layouts are those of the PTX ISA: for a thread,
// g = lane / 4 and c = lane % 4; the A fragment holds rows g and g + 8, columns 2c, 2c + 1 (+8);
// B holds rows 2c, 2c + 1 (+8) of column g; the accumulator holds rows g and g + 8, columns 2c, 2c + 1.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace fdo::tc {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes from global memory into shared memory asynchronously; with bytes = 0 it writes zeros
// and reads nothing (src must still be a valid address).
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)), "l"(src), "r"(bytes));
}

__device__ __forceinline__ void CommitCopies() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `pending` of this thread's committed copy groups are still in flight.
template <int pending>
__device__ __forceinline__ void WaitCopies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
}

// Four 8x8 float16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, r[i] receives its fragment.
__device__ __forceinline__ void LoadMatrixX4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// The same from a shared-memory address (SharedAddress of the row).
__device__ __forceinline__ void LoadMatrixX4(uint32_t (&r)[4], uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
}

__device__ __forceinline__ void LoadMatrixX4Trans(uint32_t (&r)[4], uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
}

// The same, each matrix transposed on the way (for a B operand stored row-major as [k][n]).
__device__ __forceinline__ void LoadMatrixX4Trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// acc (16x8, float32) += a (16x16, float16, row-major) * b (16x8, float16, column-major).
__device__ __forceinline__ void Mma16816(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x with the MUFU's approximation (relative error ~2^-22), subnormal results flushed to zero: one
// instruction where exp2f adds three to scale subnormals (the softmax weights never need them).
__device__ __forceinline__ float Exp2Approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The sum and the maximum over the four lanes of a quad (lane / 4 equal): the lanes that hold one row of an
// MMA accumulator.
__device__ __forceinline__ float QuadSum(float x) {
  x += __shfl_xor_sync(0xFFFFFFFFu, x, 1);
  return x + __shfl_xor_sync(0xFFFFFFFFu, x, 2);
}
__device__ __forceinline__ float QuadMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 2));
}

// Two floats as a float16x2 register, the first in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace fdo::tc
