// The SIMT attention kernel (float32 caches, and float16 head dims the MMA kernel does not take): one
// block per (row, KV head, head chunk, split). The block reads each key and value of its split once
// for all the q heads it handles, as 16-byte vectors where the layout allows; lanes_per_key lanes
// share a key, each warp walks every 4th group of keys with an online softmax, and the block merges its
// warps' states at the end.
#pragma once

#include "attention_common.cuh"

namespace fdo::attention {

constexpr int kSimtWarps = 4;
constexpr int kSimtUnroll = 2;  // key groups a warp loads before it computes on them

// N: elements per load (16 bytes, or 1); NV: loads per lane and key; HPB: most q heads per block.
template <typename S, int N, int NV, int HPB>
__global__ void __launch_bounds__(kSimtWarps * 32)
    SimtAttentionKernel(AttentionArgs<S> a, int lanes_per_key) {
  extern __shared__ float merge[];  // [slots][HPB][D + 2]: acc, then max and sum
  using V = Vec<S, N>;
  const AttentionShape& s = a.shape;
  const int D = s.head_dim;
  const int64_t t = blockIdx.x;
  const int kv_head = blockIdx.y / a.head_chunks;
  const int first = (blockIdx.y % a.head_chunks) * HPB;
  const int heads = min(HPB, a.Group() - first);
  const int h0 = kv_head * a.Group() + first;
  const int split = blockIdx.z;
  const int64_t p = s.Position(t, a.batch, a.cu, a.dec);
  if (p < 0) {
    if (a.splits == 1) {
      for (int i = threadIdx.x; i < heads * D; i += blockDim.x) a.out[t * s.QWidth() + h0 * D + i] = StoreFloat<S>(0.0f);
    }
    return;  // with splits the combine kernel writes the zeros
  }
  const KeyRange range = SplitRange(p + 1, split, a.splits);
  if (range.begin >= range.end) {
    if (static_cast<int>(threadIdx.x) < heads) a.WriteEmptyPartial(t, h0 + threadIdx.x, split);
    return;
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int tpp = lanes_per_key;
  const int keys_per_step = 32 / tpp;
  const int sub = lane % tpp;
  const int grp = lane / tpp;
  const int64_t b = a.batch[t];

  float q[HPB][NV][N];
#pragma unroll
  for (int i = 0; i < HPB; ++i) {
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int dim = (sub + tpp * k) * N;
      if (i < heads && dim < D) {
        V::Load(a.qkv + t * s.QkvWidth() + static_cast<int64_t>(h0 + i) * D + dim, q[i][k]);
      } else {
#pragma unroll
        for (int e = 0; e < N; ++e) q[i][k][e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < N; ++e) q[i][k][e] *= a.scale_log2;
    }
  }
  float run_max[HPB], run_sum[HPB], acc[HPB][NV][N];
#pragma unroll
  for (int i = 0; i < HPB; ++i) {
    run_max[i] = -CUDART_INF_F;
    run_sum[i] = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
#pragma unroll
      for (int e = 0; e < N; ++e) acc[i][k][e] = 0.0f;
    }
  }

  const S* keys = a.key_cache + s.CacheOffset(b, 0, kv_head);
  const S* values = a.value_cache + s.CacheOffset(b, 0, kv_head);
  const int64_t stride = s.KvWidth();
  const int per_warp = keys_per_step * kSimtUnroll;
  for (int64_t base = range.begin + warp * per_warp; base < range.end; base += kSimtWarps * per_warp) {
    float kf[kSimtUnroll][NV][N], vf[kSimtUnroll][NV][N];
    bool ok[kSimtUnroll];
#pragma unroll
    for (int u = 0; u < kSimtUnroll; ++u) {
      const int64_t j = base + u * keys_per_step + grp;
      ok[u] = j < range.end;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int dim = (sub + tpp * k) * N;
        if (ok[u] && dim < D) {
          V::Load(keys + j * stride + dim, kf[u][k]);
          V::Load(values + j * stride + dim, vf[u][k]);
        } else {
#pragma unroll
          for (int e = 0; e < N; ++e) kf[u][k][e] = vf[u][k][e] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kSimtUnroll; ++u) {
#pragma unroll
      for (int i = 0; i < HPB; ++i) {
        if (i >= heads) continue;  // uniform across the block
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
#pragma unroll
          for (int e = 0; e < N; ++e) dot += q[i][k][e] * kf[u][k][e];
        }
        for (int offset = tpp >> 1; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xFFFFFFFFu, dot, offset);
        if (!ok[u]) continue;
        const float new_max = fmaxf(run_max[i], dot);
        const float correction = exp2f(run_max[i] - new_max);
        const float weight = exp2f(dot - new_max);
        run_sum[i] = run_sum[i] * correction + weight;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
#pragma unroll
          for (int e = 0; e < N; ++e) acc[i][k][e] = acc[i][k][e] * correction + weight * vf[u][k][e];
        }
        run_max[i] = new_max;
      }
    }
  }

  // Merge the key groups' states: slot = (warp, group of lanes).
  const int row_floats = D + 2;
  const int slot = warp * keys_per_step + grp;
  const int slots = kSimtWarps * keys_per_step;
#pragma unroll
  for (int i = 0; i < HPB; ++i) {
    if (i >= heads) continue;
    float* state = merge + (slot * HPB + i) * row_floats;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int dim = (sub + tpp * k) * N;
      if (dim < D) {
#pragma unroll
        for (int e = 0; e < N; ++e) state[dim + e] = acc[i][k][e];
      }
    }
    if (sub == 0) {
      state[D] = run_max[i];
      state[D + 1] = run_sum[i];
    }
  }
  __syncthreads();
  float* totals = merge + slots * HPB * row_floats;  // [HPB][2]: max and sum over the slots
  if (static_cast<int>(threadIdx.x) < heads) {
    const int i = threadIdx.x;
    float m = -CUDART_INF_F;
    for (int k = 0; k < slots; ++k) m = fmaxf(m, merge[(k * HPB + i) * row_floats + D]);
    float l = 0.0f;
    for (int k = 0; k < slots; ++k) {
      const float* state = merge + (k * HPB + i) * row_floats;
      l += state[D + 1] * exp2f(state[D] - m);
    }
    totals[2 * i] = m;
    totals[2 * i + 1] = l;
    if (a.splits > 1) {
      const int64_t index = a.PartialIndex(t, h0 + i, split);
      a.partial_ml[2 * index] = m;
      a.partial_ml[2 * index + 1] = l;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < heads * D; idx += blockDim.x) {
    const int i = idx / D;
    const int d = idx - i * D;
    const float m = totals[2 * i];
    float o = 0.0f;
    for (int k = 0; k < slots; ++k) {
      const float* state = merge + (k * HPB + i) * row_floats;
      o += state[d] * exp2f(state[D] - m);
    }
    if (a.splits > 1) {
      a.partial_out[a.PartialIndex(t, h0 + i, split) * D + d] = o;
    } else {
      a.out[t * s.QWidth() + static_cast<int64_t>(h0 + i) * D + d] = StoreFloat<S>(o / totals[2 * i + 1]);
    }
  }
}

// Smallest supported heads-per-block that covers `group` q heads (at most 8; more take several blocks).
inline int SimtHeadsPerBlock(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

template <typename S, int N, int NV, int HPB>
cudaError_t LaunchSimtWith(AttentionArgs<S> a, cudaStream_t stream) {
  const int vectors = (a.shape.head_dim + N - 1) / N;
  int tpp = 1;
  while (tpp < 32 && tpp * NV < vectors) tpp <<= 1;
  const int slots = kSimtWarps * (32 / tpp);
  // At most 40 KiB: slots * head_dim <= 4 * 32 * N * NV = 1024 floats per head.
  const size_t smem = (static_cast<size_t>(slots) * HPB * (a.shape.head_dim + 2) + 2 * HPB) * sizeof(float);
  a.heads_per_tile = HPB;
  a.head_chunks = (a.Group() + HPB - 1) / HPB;
  const dim3 grid(static_cast<unsigned>(a.shape.rows), static_cast<unsigned>(a.shape.num_kv_heads * a.head_chunks),
                  static_cast<unsigned>(a.splits));
  SimtAttentionKernel<S, N, NV, HPB><<<grid, kSimtWarps * 32, smem, stream>>>(a, tpp);
  return cudaGetLastError();
}

template <typename S, int N, int NV>
cudaError_t LaunchSimtHeads(const AttentionArgs<S>& a, cudaStream_t stream) {
  switch (SimtHeadsPerBlock(a.shape.num_q_heads / a.shape.num_kv_heads)) {
    case 1:
      return LaunchSimtWith<S, N, NV, 1>(a, stream);
    case 2:
      return LaunchSimtWith<S, N, NV, 2>(a, stream);
    case 4:
      return LaunchSimtWith<S, N, NV, 4>(a, stream);
    default:
      return LaunchSimtWith<S, N, NV, 8>(a, stream);
  }
}

// 16-byte loads when head_dim and the pointers allow it (float32: 4 per load, 2 loads per lane and key;
// float16: 8 per load), else one element per load, 8 per lane and key. head_dim <= 256 either way.
template <typename S>
cudaError_t LaunchSimt(const AttentionArgs<S>& a, cudaStream_t stream) {
  constexpr int kN = kVec16<S>;
  const bool vectors = a.shape.head_dim % kN == 0 && Aligned16({a.qkv, a.key_cache, a.value_cache});
  if (!vectors) return LaunchSimtHeads<S, 1, 8>(a, stream);
  return LaunchSimtHeads<S, kN, 256 / (32 * kN)>(a, stream);
}

}  // namespace fdo::attention
