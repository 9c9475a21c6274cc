#pragma once
// Device helpers of the own kernels: typed loads/stores (fp32 math everywhere), block reductions.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

__device__ __forceinline__ float load(const void* p, EType t, int64_t i) {
  return t == EType::F32 ? static_cast<const float*>(p)[i]
                         : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
__device__ __forceinline__ void store(void* p, EType t, int64_t i, float v) {
  if (t == EType::F32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float apply_act(float v, Activation act) {
  switch (act) {
    case Activation::Silu:
      return v / (1.0f + expf(-v));
    case Activation::GeluTanh: {
      const float c = 0.7978845608028654f;  // sqrt(2/pi), nn.GELU(approximate='tanh')
      return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    case Activation::Gelu:  // nn.GELU()
      return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    default:
      return v;
  }
}

__device__ __forceinline__ const float* mod_row(const ModArg& m, int64_t token, int64_t dim) {
  if (!m.table) return nullptr;
  const int64_t row = m.token_rows ? m.token_rows[token] : 0;
  return m.table + (row * m.chunks + m.chunk) * dim;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch /* >= 33 floats */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : 0.0f;
  t = warp_sum(t);
  return t;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

// A bf16 row of `chunks` 16-byte chunks (eight values each) held in registers: thread t's j-th
// chunk is chunk t + j * blockDim.x (zeros past the row), read with one 16-byte load; `pair` sees
// each of its value pairs as float2, in order (for the row's statistics).
template <int N, class PairFn>
__device__ __forceinline__ void load_bf16_row(const __nv_bfloat16* row, int chunks, uint4 (&v)[N],
                                              PairFn&& pair) {
  const uint4* p = reinterpret_cast<const uint4*>(row);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = i < chunks ? p[i] : make_uint4(0, 0, 0, 0);
    const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
#pragma unroll
    for (int c = 0; c < 4; ++c) pair(__bfloat1622float2(h[c]));
  }
}

// The scale of E4M3 codes whose largest magnitude is `amax` (core/quantize.h): amax / 448 by IEEE
// division, as the host; 1 for zeros.
__device__ __forceinline__ float e4m3_scale(float amax) {
  return amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
}
// v / scale (IEEE division) rounded to E4M3 to nearest even, saturating, as the host rounds it.
__device__ __forceinline__ uint32_t e4m3_code(float v, float scale) {
  return __nv_cvt_float_to_fp8(__fdiv_rn(v, scale), __NV_SATFINITE, __NV_E4M3);
}
// Four values' codes packed in memory order (a first, in the low byte), for one 4-byte store.
__device__ __forceinline__ uint32_t e4m3_code4(float a, float b, float c, float d, float scale) {
  return e4m3_code(a, scale) | e4m3_code(b, scale) << 8 | e4m3_code(c, scale) << 16 |
         e4m3_code(d, scale) << 24;
}

inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

}  // namespace fisdit::cuda
