// LayerNorm (+ adaLN modulation), RMSNorm and Wan's 3D RoPE. One block per row; the row is
// staged in shared memory as fp32 so the statistics are two-pass (mean, then centred variance)
// as the fp32 reference computes them.
#include "backend/cuda/kernel_util.cuh"
#include "backend/cuda/norm.cuh"

namespace fisdit::cuda {

namespace {

int norm_threads(int64_t d) { return d >= 2048 ? 512 : d >= 512 ? 256 : 128; }

__global__ void layer_norm_kernel(const float* x, void* y, EType yt, int64_t d, const void* weight,
                                  const void* bias, EType wt, float eps, ModArg shift,
                                  ModArg scale) {
  extern __shared__ float row[];
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * d;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = xr[i];
    row[i] = v;
    sum += v;
  }
  const float mean = block_sum(sum, scratch) / static_cast<float>(d);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float c = row[i] - mean;
    sq += c * c;
  }
  const float var = block_sum(sq, scratch) / static_cast<float>(d);  // biased, as nn.LayerNorm
  const float inv = rsqrtf(var + eps);
  const float* sh = mod_row(shift, r, d);
  const float* sc = mod_row(scale, r, d);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = (row[i] - mean) * inv;
    if (weight) v *= load(weight, wt, i);
    if (bias) v += load(bias, wt, i);
    if (sc) v = v * (1.0f + sc[i]) + sh[i];
    store(y, yt, r * d + i, v);
  }
}

// Register-resident LayerNorm for d % 4 == 0 and d / 4 <= 8 * blockDim.x: row r's float4 chunks
// (thread t's j-th chunk is chunk t + j * blockDim.x) read with 16-byte loads, the statistics taken
// from registers, and each chunk of v replaced by its normalized, weighted and modulated values.
constexpr int kRowVec = 8;
__device__ __forceinline__ void layer_norm_row(float4 (&v)[kRowVec], const float* x, int64_t r,
                                               int64_t d, const void* weight, const void* bias,
                                               EType wt, float eps, const ModArg& shift,
                                               const ModArg& scale, float* scratch) {
  const int d4 = static_cast<int>(d / 4);
  const float4* xr = reinterpret_cast<const float4*>(x + r * d);
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = i < d4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    sum += (v[j].x + v[j].y) + (v[j].z + v[j].w);
  }
  const float mean = block_sum(sum, scratch) / static_cast<float>(d);
  float sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < d4) {
      const float a = v[j].x - mean, b = v[j].y - mean, c = v[j].z - mean, e = v[j].w - mean;
      sq += (a * a + b * b) + (c * c + e * e);
    }
  }
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(d) + eps);
  const float* sh = mod_row(shift, r, d);
  const float* sc = mod_row(scale, r, d);
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= d4) continue;
    float o[4] = {(v[j].x - mean) * inv, (v[j].y - mean) * inv, (v[j].z - mean) * inv,
                  (v[j].w - mean) * inv};
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t ch = 4 * static_cast<int64_t>(i) + c;
      if (weight) o[c] *= load(weight, wt, ch);
      if (bias) o[c] += load(bias, wt, ch);
      if (sc) o[c] = o[c] * (1.0f + sc[ch]) + sh[ch];
    }
    v[j] = make_float4(o[0], o[1], o[2], o[3]);
  }
}

// layer_norm_row, then packed bf16 (or float4) stores.
__global__ void layer_norm_vec_kernel(const float* x, void* y, EType yt, int64_t d,
                                      const void* weight, const void* bias, EType wt, float eps,
                                      ModArg shift, ModArg scale) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const int d4 = static_cast<int>(d / 4);
  float4 v[kRowVec];
  layer_norm_row(v, x, r, d, weight, bias, wt, eps, shift, scale, scratch);
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= d4) continue;
    if (yt == EType::BF16) {
      uint2 packed;
      *reinterpret_cast<__nv_bfloat162*>(&packed.x) = __floats2bfloat162_rn(v[j].x, v[j].y);
      *reinterpret_cast<__nv_bfloat162*>(&packed.y) = __floats2bfloat162_rn(v[j].z, v[j].w);
      reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(y) + r * d)[i] = packed;
    } else {
      reinterpret_cast<float4*>(static_cast<float*>(y) + r * d)[i] = v[j];
    }
  }
}

// layer_norm_row, each value rounded to bf16 (what layer_norm_vec_kernel stores), then the row
// quantized as quantize_rows does it from those bf16 values: amax, scale = amax / 448, codes. The
// same bits as the two kernels one after the other, without the bf16 row in memory.
__global__ void layer_norm_e4m3_kernel(const float* x, uint8_t* codes, float* scales, int64_t d,
                                       const void* weight, const void* bias, EType wt, float eps,
                                       ModArg shift, ModArg scale) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const int d4 = static_cast<int>(d / 4);
  float4 v[kRowVec];
  layer_norm_row(v, x, r, d, weight, bias, wt, eps, shift, scale, scratch);
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const float2 a = __bfloat1622float2(__floats2bfloat162_rn(v[j].x, v[j].y));
    const float2 b = __bfloat1622float2(__floats2bfloat162_rn(v[j].z, v[j].w));
    v[j] = make_float4(a.x, a.y, b.x, b.y);  // past the row: zeros, which leave amax alone
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(b.x), fabsf(b.y))));
  }
  const float s = e4m3_scale(block_max(amax, scratch));
  if (threadIdx.x == 0) scales[r] = s;
  auto* out = reinterpret_cast<uint32_t*>(codes + r * d);
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= d4) continue;
    out[i] = e4m3_code4(v[j].x, v[j].y, v[j].z, v[j].w, s);
  }
}

// bf16 rows, 8 channels (16 bytes) per access, register resident; y may alias x (every thread
// reads all of its elements before the barrier inside block_sum and writes only its own).
__global__ void rms_norm_bf16_vec_kernel(const __nv_bfloat16* x, __nv_bfloat16* y,
                                         const void* weight, EType wt, int64_t d, float eps) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const int d8 = static_cast<int>(d / 8);
  uint4 v[kRowVec];
  float sq = 0.0f;
  load_bf16_row(x + r * d, d8, v, [&](float2 f) { sq += f.x * f.x + f.y * f.y; });
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(d) + eps);
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= d8) continue;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v[j]);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float2 f = __bfloat1622float2(h[c]);
      const int64_t ch = 8 * static_cast<int64_t>(i) + 2 * c;
      h[c] = __floats2bfloat162_rn(f.x * inv * load(weight, wt, ch),
                                   f.y * inv * load(weight, wt, ch + 1));
    }
    reinterpret_cast<uint4*>(y + r * d)[i] = v[j];
  }
}

// q/k RMSNorm over the full row (all heads) and 3D RoPE per head in one pass: bf16 rows, 8
// channels per 16-byte access held in registers; each adjacent pair is normalised, weighted and
// rotated in fp32 and rounded to bf16 once. In place.
__global__ void rms_norm_rope_bf16_kernel(__nv_bfloat16* x, const void* weight, EType wt, int64_t d,
                                          int64_t head_dim, int c0, int c1, float eps,
                                          FrameList frames, int height, int width,
                                          const float2* table) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const int d8 = static_cast<int>(d / 8);
  uint4* xr = reinterpret_cast<uint4*>(x + r * d);
  uint4 v[kRowVec];
  float sq = 0.0f;
  load_bf16_row(x + r * d, d8, v, [&](float2 f) { sq += f.x * f.x + f.y * f.y; });
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(d) + eps);
  // This row's token position: (frame, row, column) for the three parts of each head's pairs.
  // 32-bit index math and no runtime-indexed arrays (they would live in local memory).
  const int pairs = static_cast<int>(head_dim / 2);
  const int per_frame = height * width, in_frame = static_cast<int>(r % per_frame);
  const int pos_f = frames.frame[r / per_frame], pos_h = in_frame / width,
            pos_w = in_frame - pos_h * width;
  const int hd = static_cast<int>(head_dim);
#pragma unroll
  for (int j = 0; j < kRowVec; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= d8) continue;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v[j]);
    int pair = (8 * i) % hd / 2;  // pair index of the first of this thread's 4 pairs
#pragma unroll
    for (int c = 0; c < 4; ++c, ++pair) {
      if (pair == pairs) pair = 0;  // the 8 channels may straddle two heads
      const float2 f = __bfloat1622float2(h[c]);
      const int ch = 8 * i + 2 * c;
      const float re = f.x * inv * load(weight, wt, ch), im = f.y * inv * load(weight, wt, ch + 1);
      const int pos = pair < c0 ? pos_f : (pair < c0 + c1 ? pos_h : pos_w);
      const float2 cs = table[pos * pairs + pair];
      h[c] = __floats2bfloat162_rn(re * cs.x - im * cs.y, re * cs.y + im * cs.x);
    }
    xr[i] = v[j];
  }
}

// y may alias x: the whole row is read before any of it is written.
__global__ void rms_norm_kernel(const void* x, EType xt, void* y, EType yt, const void* weight,
                                EType wt, int64_t d, float eps) {
  extern __shared__ float row[];
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = load(x, xt, r * d + i);
    row[i] = v;
    sq += v * v;
  }
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    store(y, yt, r * d + i, row[i] * inv * load(weight, wt, i));
}

// One thread per (token, pair); the pair rotates by the angle of its axis position.
__global__ void rope_kernel(void* x, EType xt, int64_t tokens, int64_t heads, int64_t pairs,
                            int64_t c0, int64_t c1, FrameList frames, int height, int width,
                            const float2* table) {
  // c0 pairs rotate with the frame, then c1 with the row, the rest with the column.
  const int64_t per_frame = static_cast<int64_t>(height) * width;
  const int64_t n = tokens * pairs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / pairs, j = i - t * pairs;
    const int64_t in_frame = t % per_frame;
    int64_t pos;
    if (j < c0)
      pos = frames.frame[t / per_frame];
    else if (j < c0 + c1)
      pos = in_frame / width;
    else
      pos = in_frame % width;
    const float2 cs = table[pos * pairs + j];
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (t * heads + h) * pairs * 2 + 2 * j;
      const float re = load(x, xt, base), im = load(x, xt, base + 1);
      store(x, xt, base, re * cs.x - im * cs.y);
      store(x, xt, base + 1, re * cs.y + im * cs.x);
    }
  }
}

// The threads of layer_norm_row's kernels for rows of d channels, and whether such a row fits
// them (d % 4 == 0, at most kRowVec float4 chunks a thread; x 16-byte aligned). Both kernels
// take the same test, so the fused one computes exactly the LayerNorm the other stores.
int layer_norm_vec_threads(int64_t d) { return d / 4 > 1024 ? 256 : 128; }
bool layer_norm_vec_fits(const float* x, int64_t d) {
  return reinterpret_cast<uintptr_t>(x) % 16 == 0 && d % 4 == 0 &&
         d / 4 <= int64_t{kRowVec} * layer_norm_vec_threads(d);
}

}  // namespace

void launch_layer_norm(const float* x, void* y, EType yt, int64_t rows, int64_t d,
                       const void* weight, const void* bias, EType wt, float eps, ModArg shift,
                       ModArg scale, cudaStream_t s) {
  if (rows == 0) return;
  const int vec_threads = layer_norm_vec_threads(d);
  if (layer_norm_vec_fits(x, d) &&
      reinterpret_cast<uintptr_t>(y) % (yt == EType::F32 ? 16 : 8) == 0) {
    layer_norm_vec_kernel<<<static_cast<unsigned>(rows), vec_threads, 0, s>>>(
        x, y, yt, d, weight, bias, wt, eps, shift, scale);
    check_launch("layer_norm", "", s);
    return;
  }
  const size_t smem = static_cast<size_t>(d) * sizeof(float);
  require(smem <= 200 * 1024, "layer_norm", "channels too large for one block");
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(layer_norm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "layer_norm", "");
  layer_norm_kernel<<<static_cast<unsigned>(rows), norm_threads(d), smem, s>>>(
      x, y, yt, d, weight, bias, wt, eps, shift, scale);
  check_launch("layer_norm", "", s);
}

bool launch_layer_norm_e4m3(const float* x, uint8_t* codes, float* scales, int64_t rows, int64_t d,
                            const void* weight, const void* bias, EType wt, float eps, ModArg shift,
                            ModArg scale, cudaStream_t s) {
  if (!layer_norm_vec_fits(x, d) || reinterpret_cast<uintptr_t>(codes) % 4 != 0) return false;
  if (rows == 0) return true;
  layer_norm_e4m3_kernel<<<static_cast<unsigned>(rows), layer_norm_vec_threads(d), 0, s>>>(
      x, codes, scales, d, weight, bias, wt, eps, shift, scale);
  check_launch("layer_norm_fp8", "", s);
  return true;
}

void launch_rms_norm(const void* x, EType xt, void* y, EType yt, const void* weight, EType wt,
                     int64_t rows, int64_t d, float eps, cudaStream_t s) {
  if (rows == 0) return;
  const int vec_threads = d / 8 > 1024 ? 256 : 128;
  if (xt == EType::BF16 && yt == EType::BF16 && d % 8 == 0 &&
      d / 8 <= int64_t{kRowVec} * vec_threads && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(y) % 16 == 0) {
    rms_norm_bf16_vec_kernel<<<static_cast<unsigned>(rows), vec_threads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), weight, wt, d, eps);
    check_launch("rms_norm", "", s);
    return;
  }
  const size_t smem = static_cast<size_t>(d) * sizeof(float);
  require(smem <= 200 * 1024, "rms_norm", "channels too large for one block");
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(rms_norm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "rms_norm", "");
  rms_norm_kernel<<<static_cast<unsigned>(rows), norm_threads(d), smem, s>>>(x, xt, y, yt, weight,
                                                                             wt, d, eps);
  check_launch("rms_norm", "", s);
}

void launch_rope_3d(void* x, EType xt, int64_t tokens, int64_t heads, int64_t head_dim,
                    int frame_pairs, int row_pairs, const FrameList& frames, int height, int width,
                    const float* table, cudaStream_t s) {
  const int64_t pairs = head_dim / 2, n = tokens * pairs;
  if (n == 0) return;
  rope_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, xt, tokens, heads, pairs, frame_pairs, row_pairs,
                                               frames, height, width,
                                               reinterpret_cast<const float2*>(table));
  check_launch("rope_3d", "", s);
}

bool launch_rms_norm_rope(void* x, EType xt, const void* weight, EType wt, int64_t rows, int64_t d,
                          int64_t head_dim, int frame_pairs, int row_pairs, float eps,
                          const FrameList& frames, int height, int width, const float* table,
                          cudaStream_t s) {
  const int vec_threads = d / 8 > 1024 ? 256 : 128;
  if (xt != EType::BF16 || d % 8 != 0 || d / 8 > int64_t{kRowVec} * vec_threads ||
      reinterpret_cast<uintptr_t>(x) % 16 != 0)
    return false;  // the caller runs rms_norm and rope_3d
  if (rows == 0) return true;
  rms_norm_rope_bf16_kernel<<<static_cast<unsigned>(rows), vec_threads, 0, s>>>(
      static_cast<__nv_bfloat16*>(x), weight, wt, d, head_dim, frame_pairs, row_pairs, eps, frames,
      height, width, reinterpret_cast<const float2*>(table));
  check_launch("rms_norm_rope", "", s);
  return true;
}

}  // namespace fisdit::cuda
