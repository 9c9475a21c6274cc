// Test-only kernels for sdpa_check: seeded random bf16 fill, a naive fp32 reference attention
// (one thread per (sampled query row, head), online softmax), and a non-finite counter.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// Uniform in [-amp, amp] (amp = sqrt(3) gives unit variance).
__global__ void fill_kernel(__nv_bfloat16* p, int64_t n, uint64_t seed, float amp) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float u = (mix(seed * 0x9E3779B97F4A7C15ULL + uint64_t(i)) >> 8) * (1.0f / 16777216.0f);
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * amp);
  }
}

// Thread t: head = t / nrows, row = rows[t % nrows] (a warp shares one head: K/V loads broadcast).
template <int D>
__global__ void ref_kernel(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                           float* ref, const int64_t* rows, int nrows, int64_t lk, int64_t heads,
                           float scale) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= nrows * heads) return;
  const int64_t head = t / nrows, ri = t % nrows, row = rows[ri];
  const int64_t ld = heads * D;
  float qv[D], acc[D];
  for (int i = 0; i < D; ++i) {
    qv[i] = __bfloat162float(q[row * ld + head * D + i]);
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = 0; j < lk; ++j) {
    const __nv_bfloat16* kj = k + j * ld + head * D;
    float s = 0.0f;
    for (int i = 0; i < D; ++i) s += qv[i] * __bfloat162float(kj[i]);
    s *= scale;
    const float m_new = fmaxf(m, s);
    const float corr = __expf(m - m_new);
    const float p = __expf(s - m_new);
    l = l * corr + p;
    const __nv_bfloat16* vj = v + j * ld + head * D;
    for (int i = 0; i < D; ++i) acc[i] = acc[i] * corr + p * __bfloat162float(vj[i]);
    m = m_new;
  }
  for (int i = 0; i < D; ++i) ref[(ri * heads + head) * D + i] = acc[i] / l;
}

// out rows -> fp32 [nrows, heads, d]
__global__ void gather_kernel(const __nv_bfloat16* out, float* dst, const int64_t* rows, int nrows,
                              int64_t width) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= nrows * width) return;
  dst[t] = __bfloat162float(out[rows[t / width] * width + t % width]);
}

__global__ void nonfinite_kernel(const __nv_bfloat16* p, int64_t n, unsigned long long* count) {
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(__bfloat162float(p[i]))) ++c;
  if (c) atomicAdd(count, c);
}

}  // namespace

void sdpa_fill_random(void* p, int64_t n, uint64_t seed, float amp, cudaStream_t s) {
  fill_kernel<<<1024, 256, 0, s>>>(static_cast<__nv_bfloat16*>(p), n, seed, amp);
}

bool sdpa_reference(const void* q, const void* k, const void* v, float* ref, const int64_t* rows,
                    int nrows, int64_t lk, int64_t heads, int64_t d, cudaStream_t s) {
  const int64_t threads = nrows * heads;
  const int block = 128;
  const unsigned grid = static_cast<unsigned>((threads + block - 1) / block);
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  auto Q = static_cast<const __nv_bfloat16*>(q), K = static_cast<const __nv_bfloat16*>(k),
       V = static_cast<const __nv_bfloat16*>(v);
  if (d == 64)
    ref_kernel<64><<<grid, block, 0, s>>>(Q, K, V, ref, rows, nrows, lk, heads, scale);
  else if (d == 128)
    ref_kernel<128><<<grid, block, 0, s>>>(Q, K, V, ref, rows, nrows, lk, heads, scale);
  else
    return false;
  return true;
}

void sdpa_gather_rows(const void* out, float* dst, const int64_t* rows, int nrows, int64_t width,
                      cudaStream_t s) {
  const int64_t n = nrows * width;
  gather_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(
      static_cast<const __nv_bfloat16*>(out), dst, rows, nrows, width);
}

void sdpa_count_nonfinite(const void* p, int64_t n, unsigned long long* count, cudaStream_t s) {
  nonfinite_kernel<<<1024, 256, 0, s>>>(static_cast<const __nv_bfloat16*>(p), n, count);
}
