// Memory-bound elementwise kernels: conversions, random fills, activations, gated residual adds,
// bias epilogues and the small-row GEMV of the timestep embedding (fp32 math throughout).
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/kernel_util.cuh"

namespace fisdit::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void convert_kernel(const void* src, EType st, void* dst, EType dt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(dst, dt, i, load(src, st, i));
}

// Four codes per thread (one 32-bit load); the decode to half is exact for both formats, as is
// half -> float; the product is one fp32 rounding, the store one more for BF16 (as on the host).
__global__ void dequantize_fp8_kernel(const uint8_t* src, __nv_fp8_interpretation_t fmt,
                                      float scale, void* dst, EType dt, int64_t n) {
  const int64_t quads = n / 4;
  for (int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; q < quads;
       q += int64_t{gridDim.x} * blockDim.x) {
    const uint32_t codes = reinterpret_cast<const uint32_t*>(src)[q];
    for (int j = 0; j < 4; ++j) {
      const auto code = static_cast<__nv_fp8_storage_t>((codes >> (8 * j)) & 0xffu);
      store(dst, dt, 4 * q + j, __half2float(__half(__nv_cvt_fp8_to_halfraw(code, fmt))) * scale);
    }
  }
  // The last n % 4 codes (the caller passes a 4-byte aligned source).
  if (blockIdx.x == 0 && threadIdx.x < n % 4) {
    const int64_t i = 4 * quads + threadIdx.x;
    store(dst, dt, i, __half2float(__half(__nv_cvt_fp8_to_halfraw(src[i], fmt))) * scale);
  }
}

// One block per row: the row's amax, then every value divided by amax / 448 (IEEE division, as
// the host) and rounded to E4M3 to nearest even, saturating (|v| <= 448 here but for rounding).
// With `quads` four codes are packed into one 32-bit store (cols % 4 == 0, 4-byte aligned rows).
__global__ void quantize_rows_kernel(const void* x, EType xt, uint8_t* codes, float* scales,
                                     int64_t cols, bool quads) {
  __shared__ float scratch[33];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * cols;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    amax = fmaxf(amax, fabsf(load(x, xt, base + c)));
  amax = block_max(amax, scratch);
  const float scale = e4m3_scale(amax);
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  const auto value = [&](int64_t c) { return load(x, xt, base + c); };
  if (quads) {
    auto* out = reinterpret_cast<uint32_t*>(codes + base);
    for (int64_t q = threadIdx.x; q < cols / 4; q += blockDim.x)
      out[q] =
          e4m3_code4(value(4 * q), value(4 * q + 1), value(4 * q + 2), value(4 * q + 3), scale);
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      codes[base + c] = static_cast<uint8_t>(e4m3_code(value(c), scale));
  }
}

// quantize_rows_kernel for BF16 rows of cols % 8 == 0 (16-byte aligned) and at most
// 8 * kQuantChunks * blockDim.x columns: each thread holds up to kQuantChunks chunks of eight
// values in registers, read once with 16-byte loads, and stores their eight codes in one 8-byte
// store. The same amax, scale and codes as quantize_rows_kernel, bit for bit.
constexpr int kQuantChunks = 8;
__global__ void quantize_rows_bf16x8_kernel(const __nv_bfloat16* x, uint8_t* codes, float* scales,
                                            int64_t cols) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const int chunks = static_cast<int>(cols / 8);
  uint4 v[kQuantChunks];
  float amax = 0.0f;
  load_bf16_row(x + r * cols, chunks, v,
                [&](float2 f) { amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y))); });
  amax = block_max(amax, scratch);
  const float scale = e4m3_scale(amax);
  if (threadIdx.x == 0) scales[r] = scale;
  auto* out = reinterpret_cast<uint2*>(codes + r * cols);
#pragma unroll
  for (int j = 0; j < kQuantChunks; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= chunks) continue;
    const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
    const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]),
                 c = __bfloat1622float2(h[2]), e = __bfloat1622float2(h[3]);
    out[i] =
        make_uint2(e4m3_code4(a.x, a.y, b.x, b.y, scale), e4m3_code4(c.x, c.y, e.x, e.y, scale));
  }
}

__device__ __forceinline__ float* slot(float* slots, int i) {
  return slots + kFp8AttnSlotFloats * i;
}

// x[i] less the mean of its column (x [n / cols, cols]); x[i] itself without means.
__device__ __forceinline__ float centered(const void* x, EType xt, int64_t i, const float* mean,
                                          int64_t cols) {
  const float v = load(x, xt, i);
  return mean ? v - mean[i % cols] : v;
}

// Sums of x [rows, cols] over the rows of chunk blockIdx.y, per column: partial[chunk, col].
__global__ void column_partial_sums_kernel(const void* x, EType xt, int64_t rows, int64_t cols,
                                           int64_t rows_per_chunk, float* partial) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float sum = 0.0f;
  for (int64_t r = r0; r < r1; ++r) sum += load(x, xt, r * cols + c);
  partial[blockIdx.y * cols + c] = sum;
}

// mean[col] = (sum of the chunks in order) / rows: deterministic.
__global__ void column_mean_finish_kernel(const float* partial, int64_t chunks, int64_t cols,
                                          int64_t rows, float* mean) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  double sum = 0.0;
  for (int64_t k = 0; k < chunks; ++k) sum += partial[k * cols + c];
  mean[c] = static_cast<float>(sum / static_cast<double>(rows));
}

// max(|x - mean|) of n values into *amax (zeroed before; non-negative floats order as their
// bits).
__global__ void amax_tensor_kernel(const void* x, EType xt, int64_t n, const float* mean,
                                   int64_t cols, float* amax) {
  __shared__ float scratch[33];
  float m = 0.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    m = fmaxf(m, fabsf(centered(x, xt, i, mean, cols)));
  m = block_max(m, scratch);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned*>(amax), __float_as_uint(m));
}

// One thread: the scales of an fp8 attention call from the amaxes of q, k and v. The output in
// E4M3 (fp8_out) is a convex combination of v's rows, so |o| <= amax(v) up to P's rounding: its
// scale leaves 1/8 headroom above that.
__global__ void attention_fp8_scalars_kernel(float* slots, bool fp8_out) {
  *slot(slots, kDescaleQ) = e4m3_scale(*slot(slots, kAmaxQ));
  *slot(slots, kDescaleK) = e4m3_scale(*slot(slots, kAmaxK));
  const float dv = e4m3_scale(*slot(slots, kAmaxV));
  *slot(slots, kDescaleV) = dv;
  *slot(slots, kScaleS) = 448.0f;
  *slot(slots, kDescaleS) = 1.0f / 448.0f;
  *slot(slots, kScaleO) = fp8_out ? 1.0f / (1.125f * dv) : 1.0f;
  *slot(slots, kDescaleO) = fp8_out ? 1.125f * dv : 1.0f;
}

// (x - mean) / scale rounded to E4M3 as quantize_rows_kernel does, the scale read from the
// device.
__global__ void quantize_tensor_kernel(const void* x, EType xt, uint8_t* codes, int64_t n,
                                       const float* mean, int64_t cols, const float* scale_ptr,
                                       bool quads) {
  const float scale = *scale_ptr;
  const auto code = [&](int64_t i) {
    return static_cast<uint32_t>(__nv_cvt_float_to_fp8(
        __fdiv_rn(centered(x, xt, i, mean, cols), scale), __NV_SATFINITE, __NV_E4M3));
  };
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (quads) {
    auto* out = reinterpret_cast<uint32_t*>(codes);
    for (int64_t q = first; q < n / 4; q += stride)
      out[q] = code(4 * q) | code(4 * q + 1) << 8 | code(4 * q + 2) << 16 | code(4 * q + 3) << 24;
  } else {
    for (int64_t i = first; i < n; i += stride) codes[i] = static_cast<uint8_t>(code(i));
  }
}

__global__ void dequantize_e4m3_slot_kernel(const uint8_t* src, const float* scale_ptr,
                                            const float* mean, int64_t cols, void* dst, EType dt,
                                            int64_t n) {
  const float scale = *scale_ptr;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(src[i], __NV_E4M3))) * scale;
    store(dst, dt, i, mean ? v + mean[i % cols] : v);
  }
}

__global__ void add_column_kernel(void* x, EType xt, int64_t n, const float* mean, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(x, xt, i, load(x, xt, i) + mean[i % cols]);
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Counter-based normal numbers (splitmix64 + Box-Muller): element i depends on (seed, i) only.
__global__ void random_normal_kernel(void* dst, EType dt, int64_t n, float mean, float stddev,
                                     uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(i) + 1);
    const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
    const float u2 = static_cast<float>((r >> 16) & 0xffffffu) * (1.0f / 16777216.0f);
    const float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    store(dst, dt, i, mean + stddev * z);
  }
}

__global__ void activation_kernel(const void* x, EType xt, void* y, EType yt, int64_t n,
                                  Activation act) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(y, yt, i, apply_act(load(x, xt, i), act));
}

__global__ void bias_act_kernel(void* y, EType yt, const float* row_scale, const float* col_scale,
                                const void* bias, EType bt, int64_t rows, int64_t cols,
                                Activation act) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float v = load(y, yt, i);
    if (row_scale) v = v * row_scale[i / cols] * col_scale[i % cols];
    if (bias) v += load(bias, bt, i % cols);
    store(y, yt, i, apply_act(v, act));
  }
}

// One warp per output column n, all m (<= 8) rows at once; w rows read once, coalesced.
constexpr int kMaxGemvRows = 8;
__global__ void gemv_rows_kernel(const float* x, const __nv_bfloat16* w, const void* bias, EType bt,
                                 void* y, EType yt, int m, int64_t n, int64_t k, Activation act) {
  const int64_t col = blockIdx.x * int64_t{blockDim.x / 32} + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (col >= n) return;
  float acc[kMaxGemvRows];
#pragma unroll
  for (int r = 0; r < kMaxGemvRows; ++r) acc[r] = 0.0f;
  const __nv_bfloat16* wr = w + col * k;
  for (int64_t i = lane; i < k; i += 32) {
    const float wv = __bfloat162float(wr[i]);
#pragma unroll
    for (int r = 0; r < kMaxGemvRows; ++r)
      if (r < m) acc[r] += x[r * k + i] * wv;
  }
#pragma unroll
  for (int r = 0; r < kMaxGemvRows; ++r) {
    if (r >= m) break;
    const float s = warp_sum(acc[r]);
    if (lane == 0) {
      float v = s + (bias ? load(bias, bt, col) : 0.0f);
      store(y, yt, r * n + col, apply_act(v, act));
    }
  }
}

// x[r, i] += y[r, i] * gate[row(r), i]; 4 channels per thread when d % 4 == 0.
__global__ void add_vec4_kernel(float* x, const void* y, EType yt, int64_t rows, int64_t d,
                                ModArg gate) {
  const int64_t d4 = d / 4, n4 = rows * d4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / d4, c = (i - r * d4) * 4;
    float4 xv = reinterpret_cast<float4*>(x)[i];
    float yv[4];
    if (yt == EType::BF16) {
      const uint2 raw = reinterpret_cast<const uint2*>(y)[i];
      const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
      const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
      yv[0] = __low2float(lo);
      yv[1] = __high2float(lo);
      yv[2] = __low2float(hi);
      yv[3] = __high2float(hi);
    } else {
      const float4 f = reinterpret_cast<const float4*>(y)[i];
      yv[0] = f.x;
      yv[1] = f.y;
      yv[2] = f.z;
      yv[3] = f.w;
    }
    if (gate.table) {
      const float4 g = *reinterpret_cast<const float4*>(mod_row(gate, r, d) + c);
      yv[0] *= g.x;
      yv[1] *= g.y;
      yv[2] *= g.z;
      yv[3] *= g.w;
    }
    xv.x += yv[0];
    xv.y += yv[1];
    xv.z += yv[2];
    xv.w += yv[3];
    reinterpret_cast<float4*>(x)[i] = xv;
  }
}

__global__ void add_kernel(float* x, const void* y, EType yt, int64_t rows, int64_t d,
                           ModArg gate) {
  const int64_t n = rows * d;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    float v = load(y, yt, i);
    if (gate.table) v *= mod_row(gate, r, d)[c];
    x[i] += v;
  }
}

__global__ void mul_gate_kernel(void* x, EType xt, int64_t rows, int64_t d, ModArg gate) {
  const int64_t n = rows * d;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    store(x, xt, i, load(x, xt, i) * mod_row(gate, r, d)[c]);
  }
}

// bf16 x, 4 channels per thread (d % 4 == 0, aligned).
__global__ void mul_gate_bf16_vec4_kernel(__nv_bfloat16* x, int64_t rows, int64_t d, ModArg gate) {
  const int64_t d4 = d / 4, n4 = rows * d4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / d4, c = (i - r * d4) * 4;
    uint2 raw = reinterpret_cast<uint2*>(x)[i];
    __nv_bfloat162* lo = reinterpret_cast<__nv_bfloat162*>(&raw.x);
    __nv_bfloat162* hi = reinterpret_cast<__nv_bfloat162*>(&raw.y);
    const float4 g = *reinterpret_cast<const float4*>(mod_row(gate, r, d) + c);
    *lo = __floats2bfloat162_rn(__low2float(*lo) * g.x, __high2float(*lo) * g.y);
    *hi = __floats2bfloat162_rn(__low2float(*hi) * g.z, __high2float(*hi) * g.w);
    reinterpret_cast<uint2*>(x)[i] = raw;
  }
}

__global__ void add_scaled_kernel(void* x, EType xt, const void* y, EType yt, float alpha,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(x, xt, i, load(x, xt, i) + alpha * load(y, yt, i));
}

__global__ void sub_kernel(const void* a, EType at, const void* b, EType bt, void* out, EType ot,
                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(out, ot, i, load(a, at, i) - load(b, bt, i));
}

__global__ void add_row_kernel(const void* a, EType at, const void* row, EType rt, void* out,
                               EType ot, int64_t n, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store(out, ot, i, load(a, at, i) + load(row, rt, i % d));
}

}  // namespace

void launch_convert(const void* src, EType st, void* dst, EType dt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  convert_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(src, st, dst, dt, n);
  check_launch("convert", "", s);
}

void launch_random_normal(void* dst, EType dt, int64_t n, float mean, float stddev, uint64_t seed,
                          cudaStream_t s) {
  if (n == 0) return;
  random_normal_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(dst, dt, n, mean, stddev, seed);
  check_launch("random_normal", "", s);
}

void launch_dequantize_fp8(const uint8_t* src, bool e5m2, float scale, void* dst, EType dt,
                           int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dequantize_fp8_kernel<<<grid_for(std::max<int64_t>(n / 4, 1), kThreads), kThreads, 0, s>>>(
      src, e5m2 ? __NV_E5M2 : __NV_E4M3, scale, dst, dt, n);
  check_launch("dequantize", "", s);
}

void launch_quantize_rows_e4m3(const void* x, EType xt, uint8_t* codes, float* scales, int64_t rows,
                               int64_t cols, cudaStream_t s) {
  if (rows == 0) return;
  if (rows > 0x7fffffff) fail("quantize_rows", "", "more than 2^31 rows");
  if (xt == EType::BF16 && cols % 8 == 0 && cols <= int64_t{8} * kQuantChunks * kThreads &&
      reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 8 == 0) {
    quantize_rows_bf16x8_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), codes, scales, cols);
    check_launch("quantize_rows", "", s);
    return;
  }
  const bool quads = cols % 4 == 0 && reinterpret_cast<uintptr_t>(codes) % 4 == 0;
  quantize_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, xt, codes, scales, cols,
                                                                        quads);
  check_launch("quantize_rows", "", s);
}

namespace {
int64_t mean_chunks(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(256, (rows + 63) / 64));
}
}  // namespace

int64_t column_mean_scratch_floats(int64_t rows, int64_t cols) { return mean_chunks(rows) * cols; }

void launch_column_mean(const void* x, EType xt, int64_t rows, int64_t cols, float* mean,
                        float* scratch, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const int64_t chunks = mean_chunks(rows);
  const int64_t per = (rows + chunks - 1) / chunks;
  const dim3 grid(grid_for(cols, kThreads), static_cast<unsigned>(chunks));
  column_partial_sums_kernel<<<grid, kThreads, 0, s>>>(x, xt, rows, cols, per, scratch);
  column_mean_finish_kernel<<<grid_for(cols, kThreads), kThreads, 0, s>>>(scratch, chunks, cols,
                                                                          rows, mean);
  check_launch("column_mean", "", s);
}

void launch_amax_tensor(const void* x, EType xt, int64_t n, const float* mean, int64_t cols,
                        float* slots, int amax_slot, cudaStream_t s) {
  if (n == 0) return;
  amax_tensor_kernel<<<grid_for(n, kThreads, 1024), kThreads, 0, s>>>(
      x, xt, n, mean, cols, slots + kFp8AttnSlotFloats * amax_slot);
  check_launch("amax", "", s);
}

void launch_attention_fp8_scalars(float* slots, bool fp8_out, cudaStream_t s) {
  attention_fp8_scalars_kernel<<<1, 1, 0, s>>>(slots, fp8_out);
  check_launch("attention_fp8 scalars", "", s);
}

void launch_quantize_tensor_e4m3(const void* x, EType xt, uint8_t* codes, int64_t n,
                                 const float* mean, int64_t cols, const float* slots,
                                 int scale_slot, cudaStream_t s) {
  if (n == 0) return;
  const bool quads = n % 4 == 0 && reinterpret_cast<uintptr_t>(codes) % 4 == 0;
  quantize_tensor_kernel<<<grid_for(quads ? n / 4 : n, kThreads), kThreads, 0, s>>>(
      x, xt, codes, n, mean, cols, slots + kFp8AttnSlotFloats * scale_slot, quads);
  check_launch("quantize_tensor", "", s);
}

void launch_dequantize_e4m3_slot(const uint8_t* src, const float* slots, int scale_slot,
                                 const float* mean, int64_t cols, void* dst, EType dt, int64_t n,
                                 cudaStream_t s) {
  if (n == 0) return;
  dequantize_e4m3_slot_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(
      src, slots + kFp8AttnSlotFloats * scale_slot, mean, cols, dst, dt, n);
  check_launch("dequantize", "", s);
}

void launch_add_column(void* x, EType xt, int64_t n, const float* mean, int64_t cols,
                       cudaStream_t s) {
  if (n == 0) return;
  add_column_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, xt, n, mean, cols);
  check_launch("add_column", "", s);
}

void launch_activation(const void* x, EType xt, void* y, EType yt, int64_t n, Activation act,
                       cudaStream_t s) {
  if (n == 0) return;
  activation_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, xt, y, yt, n, act);
  check_launch("activation", "", s);
}

void launch_bias_act(void* y, EType yt, const void* bias, EType bt, int64_t rows, int64_t cols,
                     Activation act, cudaStream_t s) {
  if (rows * cols == 0 || (!bias && act == Activation::None)) return;
  bias_act_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, s>>>(y, yt, nullptr, nullptr,
                                                                       bias, bt, rows, cols, act);
  check_launch("linear (bias epilogue)", "", s);
}

void launch_scale_bias_act(void* y, EType yt, const float* row_scale, const float* col_scale,
                           const void* bias, EType bt, int64_t rows, int64_t cols, Activation act,
                           cudaStream_t s) {
  if (rows * cols == 0) return;
  bias_act_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, s>>>(y, yt, row_scale, col_scale,
                                                                       bias, bt, rows, cols, act);
  check_launch("linear_fp8 (scale epilogue)", "", s);
}

void launch_gemv_rows(const float* x, const void* w, const void* bias, EType bt, void* y, EType yt,
                      int64_t m, int64_t n, int64_t k, Activation act, cudaStream_t s) {
  require(m >= 1 && m <= kMaxGemvRows, "linear", "gemv path takes 1..8 rows");
  const int warps = 8;
  const unsigned blocks = static_cast<unsigned>((n + warps - 1) / warps);
  gemv_rows_kernel<<<blocks, warps * 32, 0, s>>>(x, static_cast<const __nv_bfloat16*>(w), bias, bt,
                                                 y, yt, static_cast<int>(m), n, k, act);
  check_launch("linear (gemv)", "", s);
}

void launch_add(float* x, const void* y, EType yt, int64_t rows, int64_t d, ModArg gate,
                cudaStream_t s) {
  const int64_t n = rows * d;
  if (n == 0) return;
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % (yt == EType::F32 ? 16 : 8) == 0 &&
                   (!gate.table || reinterpret_cast<uintptr_t>(gate.table) % 16 == 0);
  if (vec)
    add_vec4_kernel<<<grid_for(n / 4, kThreads), kThreads, 0, s>>>(x, y, yt, rows, d, gate);
  else
    add_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, yt, rows, d, gate);
  check_launch("add", "", s);
}

void launch_mul_gate(void* x, EType xt, int64_t rows, int64_t d, ModArg gate, cudaStream_t s) {
  if (rows * d == 0) return;
  const bool vec = xt == EType::BF16 && d % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(gate.table) % 16 == 0;
  if (vec)
    mul_gate_bf16_vec4_kernel<<<grid_for(rows * d / 4, kThreads), kThreads, 0, s>>>(
        static_cast<__nv_bfloat16*>(x), rows, d, gate);
  else
    mul_gate_kernel<<<grid_for(rows * d, kThreads), kThreads, 0, s>>>(x, xt, rows, d, gate);
  check_launch("mul_gate", "", s);
}

void launch_add_scaled(void* x, EType xt, const void* y, EType yt, float alpha, int64_t n,
                       cudaStream_t s) {
  if (n == 0) return;
  add_scaled_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, xt, y, yt, alpha, n);
  check_launch("add_scaled", "", s);
}

void launch_sub(const void* a, EType at, const void* b, EType bt, void* out, EType ot, int64_t n,
                cudaStream_t s) {
  if (n == 0) return;
  sub_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(a, at, b, bt, out, ot, n);
  check_launch("sub", "", s);
}

void launch_add_row(const void* a, EType at, const void* row, EType rt, void* out, EType ot,
                    int64_t n, int64_t d, cudaStream_t s) {
  if (n == 0) return;
  add_row_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(a, at, row, rt, out, ot, n, d);
  check_launch("add_row", "", s);
}

}  // namespace fisdit::cuda
