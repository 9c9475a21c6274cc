// The reference attention kernel Backend::attention falls back to when cuDNN declines a shape
// (matmul.cpp), and Backend::causal_attention's (a text encoder's few hundred tokens): bf16
// q/k/v/out, fp32 online softmax, one block per query and head. Declared in attention.h next to
// the cuDNN engine (attention.cpp).
#include "backend/cuda/attention.h"
#include "backend/cuda/kernel_util.cuh"

namespace fisdit::cuda {

namespace {

// One block of 128 threads per (query, head): scores for 128 keys at a time, online softmax,
// each thread owns up to two output channels. fp32 throughout.
constexpr int kAttnThreads = 128;
// Key/value head h / group serves query head h (grouped query attention; group 1 otherwise). With
// `causal`, query i sees keys 0..i only.
__global__ void attention_naive_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                       const __nv_bfloat16* v, __nv_bfloat16* out, int64_t lk,
                                       int64_t heads, int64_t group, bool causal, int d,
                                       float scale) {
  __shared__ float qs[256];
  __shared__ float ps[kAttnThreads];
  __shared__ float scratch[33];
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int64_t kv_heads = heads / group, kh = h / group;
  if (causal) lk = i + 1;
  const int tid = threadIdx.x;
  for (int c = tid; c < d; c += kAttnThreads) qs[c] = __bfloat162float(q[(i * heads + h) * d + c]);
  __syncthreads();
  float m = -INFINITY, l = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
  for (int64_t j0 = 0; j0 < lk; j0 += kAttnThreads) {
    const int64_t j = j0 + tid;
    float s = -INFINITY;
    if (j < lk) {
      const __nv_bfloat16* kj = k + (j * kv_heads + kh) * d;
      float dot = 0.0f;
      for (int c = 0; c < d; ++c) dot += qs[c] * __bfloat162float(kj[c]);
      s = dot * scale;
    }
    const float m_new = fmaxf(m, block_max(s, scratch));
    const float p = j < lk ? expf(s - m_new) : 0.0f;
    ps[tid] = p;
    const float tile_l = block_sum(p, scratch);  // its barriers also publish ps
    const float corr = expf(m - m_new);
    l = l * corr + tile_l;
    acc0 *= corr;
    acc1 *= corr;
    const int64_t count = lk - j0 < kAttnThreads ? lk - j0 : kAttnThreads;
    for (int64_t jj = 0; jj < count; ++jj) {
      const __nv_bfloat16* vj = v + ((j0 + jj) * kv_heads + kh) * d;
      if (tid < d) acc0 += ps[jj] * __bfloat162float(vj[tid]);
      if (tid + kAttnThreads < d) acc1 += ps[jj] * __bfloat162float(vj[tid + kAttnThreads]);
    }
    m = m_new;
    __syncthreads();  // ps is rewritten by the next tile
  }
  __nv_bfloat16* o = out + (i * heads + h) * d;
  if (tid < d) o[tid] = __float2bfloat16_rn(acc0 / l);
  if (tid + kAttnThreads < d) o[tid + kAttnThreads] = __float2bfloat16_rn(acc1 / l);
}

}  // namespace

void launch_attention_naive(const void* q, const void* k, const void* v, void* out, int64_t lq,
                            int64_t lk, int64_t heads, int64_t head_dim, cudaStream_t s) {
  require(head_dim <= 256, "attention", "the fallback kernel takes head_dim <= 256");
  require(lq <= 0x7fffffff && heads <= 65535, "attention", "too many queries or heads");
  if (lq == 0) return;
  const dim3 grid(static_cast<unsigned>(lq), static_cast<unsigned>(heads));
  attention_naive_kernel<<<grid, kAttnThreads, 0, s>>>(
      static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
      static_cast<const __nv_bfloat16*>(v), static_cast<__nv_bfloat16*>(out), lk, heads, 1, false,
      static_cast<int>(head_dim), 1.0f / sqrtf(static_cast<float>(head_dim)));
  check_launch("attention (fallback kernel)", "", s);
}

void launch_causal_attention(const void* q, const void* k, const void* v, void* out, int64_t len,
                             int64_t heads, int64_t kv_heads, int64_t head_dim, cudaStream_t s) {
  require(head_dim <= 256, "causal_attention", "the kernel takes head_dim <= 256");
  require(len <= 0x7fffffff && heads <= 65535, "causal_attention", "too many tokens or heads");
  if (len == 0) return;
  const dim3 grid(static_cast<unsigned>(len), static_cast<unsigned>(heads));
  attention_naive_kernel<<<grid, kAttnThreads, 0, s>>>(
      static_cast<const __nv_bfloat16*>(q), static_cast<const __nv_bfloat16*>(k),
      static_cast<const __nv_bfloat16*>(v), static_cast<__nv_bfloat16*>(out), len, heads,
      heads / kv_heads, true, static_cast<int>(head_dim),
      1.0f / sqrtf(static_cast<float>(head_dim)));
  check_launch("causal_attention", "", s);
}

}  // namespace fisdit::cuda
