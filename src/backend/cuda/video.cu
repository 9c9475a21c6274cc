// Kernels of the video VAE ops on channels-last [T, H, W, C] tensors, F32 or BF16 (fp32 math,
// results rounded to nearest once): per-channel bias, channel slices, the channel RMS norm
// (+ SiLU), nearest 2x upsampling, zero padding, Wan 2.2 AvgDown3D / DupUp3D / 2x2 patchify,
// HunyuanVideo 1.5's replicate padding / space-to-channels / channel group means and repeats,
// and the transpose and row softmax that video_engine.cpp runs between its library calls.
//
// The layout puts a pixel's channels next to each other, so most kernels are "pixel-major":
// threadIdx.x walks the channels of one pixel (consecutive lanes, consecutive addresses: the
// loads and stores are coalesced), threadIdx.y and the blocks walk the pixels in a grid-stride
// loop. A pixel's coordinates are divided out once per pixel, never per element. Kernels that
// only move whole channel runs (upsampling, padding, the space-to-channel rearranges) move them
// in the widest unit (16, 8, 4 or 2 bytes) that divides the runs and the addresses, so they are
// dtype-free; the others are templates over float and __nv_bfloat16.
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

#include "backend/cuda/kernel_util.cuh"
#include "backend/cuda/video.cuh"

namespace fisdit::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The pixel-major grid-stride loop: this thread's first pixel and the step between its pixels.
__device__ __forceinline__ int64_t first_pixel() {
  return blockIdx.x * int64_t{blockDim.y} + threadIdx.y;
}
__device__ __forceinline__ int64_t pixel_step() { return int64_t{gridDim.x} * blockDim.y; }

// ---------------------------------------------------------------- per-channel arithmetic

// y[p, c] += bias[c], in place.
template <typename T>
__global__ void channel_bias_kernel(T* y, const float* bias, int64_t pixels, int64_t c) {
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    T* row = y + p * c;
    for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x)
      row[ch] = from_f<T>(to_f(row[ch]) + bias[ch]);
  }
}

// dst[p * dst_pitch + c] = src[p * src_pitch + c] (+ bias[c]) for c < channels.
template <typename T>
__global__ void take_channels_kernel(const T* src, int64_t src_pitch, T* dst, int64_t dst_pitch,
                                     int64_t pixels, int64_t channels, const float* bias) {
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const T* s = src + p * src_pitch;
    T* d = dst + p * dst_pitch;
    for (int64_t ch = threadIdx.x; ch < channels; ch += blockDim.x)
      d[ch] = bias ? from_f<T>(to_f(s[ch]) + bias[ch]) : s[ch];
  }
}

// One warp per pixel: the lanes stride over its channels and the sum of squares is reduced in
// fp32 across the warp (fp32 rounding, ~1e-7 relative, off a double sum for the VAE's <= 1024
// channels); then the same lanes scale the channels they read (a re-read of what the warp just
// loaded, mostly served by the caches).
template <typename T>
__global__ void channel_rms_norm_kernel(const T* x, const float* gamma, T* y, int64_t pixels,
                                        int64_t c, float scale, bool silu) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t{gridDim.x} * blockDim.x) >> 5;
  for (int64_t p = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5; p < pixels; p += warps) {
    const T* row = x + p * c;
    float sq = 0;
    for (int64_t ch = lane; ch < c; ch += 32) {
      const float v = to_f(row[ch]);
      sq += v * v;
    }
    sq = warp_sum(sq);
    const float norm = fmaxf(sqrtf(sq), 1e-12f);
    T* out = y + p * c;
    for (int64_t ch = lane; ch < c; ch += 32) {
      const float v = to_f(row[ch]) / norm * scale * gamma[ch];
      out[ch] = from_f<T>(silu ? v / (1.0f + expf(-v)) : v);
    }
  }
}

// out[f, i, j, o] = the mean over g < group of x[f ft + it - pad, i fs + ih, j fs + iw, ci] with
// (ci, it, ih, iw) the flattened index o * group + g of the (c, ft, fs, fs) neighbourhood; the
// frames before the first (front padding) are zeros.
template <typename T>
__global__ void avg_down3d_kernel(const T* x, T* y, int64_t h, int64_t w, int64_t c, int64_t to,
                                  int64_t ho, int64_t wo, int out_c, int ft, int fs, int pad,
                                  int group) {
  const int64_t pixels = to * ho * wo;
  const int plane = fs * fs, factor = ft * plane;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % wo, i = (p / wo) % ho, f = p / (wo * ho);
    for (int o = threadIdx.x; o < out_c; o += blockDim.x) {
      float sum = 0;
      for (int g = 0; g < group; ++g) {
        const int k = o * group + g, ci = k / factor, r = k % factor;
        const int it = r / plane, ih = (r / fs) % fs, iw = r % fs;
        const int64_t tf = f * ft + it - pad;
        if (tf >= 0) sum += to_f(x[((tf * h + i * fs + ih) * w + j * fs + iw) * c + ci]);
      }
      y[p * out_c + o] = from_f<T>(sum / static_cast<float>(group));
    }
  }
}

// out[..., c] = the mean of x[..., c groups + g] over g, summed in order.
template <typename T>
__global__ void channel_group_mean_kernel(const T* x, T* y, int64_t pixels, int64_t c, int groups) {
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const T* in = x + p * c * groups;
    for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
      float sum = 0;
      for (int g = 0; g < groups; ++g) sum += to_f(in[ch * groups + g]);
      y[p * c + ch] = from_f<T>(sum / static_cast<float>(groups));
    }
  }
}

// Row softmax(scale * s) of fp32 logits, written as T (in place when T is float and p == s).
// One block per row; the row is read three times (max, sum, write) and never written before
// its last read, so p may alias s.
template <typename T>
__global__ void softmax_rows_kernel(const float* s, T* p, int64_t cols, float scale) {
  __shared__ float scratch[33];
  const float* row = s + blockIdx.x * cols;
  T* out = p + blockIdx.x * cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, row[j] * scale);
  mx = block_max(mx, scratch);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(row[j] * scale - mx);
  sum = block_sum(sum, scratch);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    out[j] = from_f<T>(expf(row[j] * scale - mx) * inv);
}

// ---------------------------------------------------------------- element permutations (exact)

// out[f, i, j, o] = x[(f + skip) / ft, i / fs, j / fs, src] with
// src = (o * factor + ((f + skip) % ft * fs + i % fs) * fs + j % fs) / repeats.
template <typename T>
__global__ void dup_up3d_kernel(const T* x, T* y, int64_t h, int64_t w, int64_t c, int64_t to,
                                int out_c, int ft, int fs, int skip, int repeats) {
  const int64_t ho = h * fs, wo = w * fs, pixels = to * ho * wo;
  const int factor = ft * fs * fs;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % wo, i = (p / wo) % ho, f = p / (wo * ho);
    const int64_t tf = f + skip, ts = tf / ft;
    const int base =
        (static_cast<int>(tf % ft) * fs + static_cast<int>(i % fs)) * fs + static_cast<int>(j % fs);
    const T* src = x + ((ts * h + i / fs) * w + j / fs) * c;
    T* dst = y + p * out_c;
    for (int o = threadIdx.x; o < out_c; o += blockDim.x)
      dst[o] = src[(o * factor + base) / repeats];
  }
}

// Small side [t, h, w, 4c] over its pixels: channel ci*4 + r*2 + q <-> big pixel
// (2i + q, 2j + r), channel ci of [t, 2h, 2w, c]. `inverse` writes the big side.
template <typename T>
__global__ void space_to_channels2_kernel(const T* x, T* y, int64_t t, int64_t h, int64_t w,
                                          int64_t c, bool inverse) {
  const int64_t pixels = t * h * w, cs = 4 * c;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % w, i = (p / w) % h, f = p / (w * h);
    for (int64_t cc = threadIdx.x; cc < cs; cc += blockDim.x) {
      const int64_t ci = cc >> 2, r = (cc >> 1) & 1, q = cc & 1;
      const int64_t s = p * cs + cc;
      const int64_t b = ((f * 2 * h + 2 * i + q) * 2 * w + 2 * j + r) * c + ci;
      if (inverse)
        y[b] = x[s];
      else
        y[s] = x[b];
    }
  }
}

// out[p, o] = x[p, o / repeats].
template <typename T>
__global__ void channel_repeat_kernel(const T* x, T* y, int64_t pixels, int64_t c, int repeats) {
  const int64_t co = c * repeats;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const T* in = x + p * c;
    T* out = y + p * co;
    for (int64_t o = threadIdx.x; o < co; o += blockDim.x) out[o] = in[o / repeats];
  }
}

// out[b, c, r] = in[b, r, c] for in [batch, rows, cols]: 32x32 tiles through shared memory,
// tiles numbered along blockIdx.x (rows or cols may be in the millions), batch along blockIdx.y.
template <typename T>
__global__ void transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols, int64_t tiles_c) {
  __shared__ T tile[32][33];
  const int64_t b = blockIdx.y;
  const int64_t r0 = (blockIdx.x / tiles_c) * 32, c0 = (blockIdx.x % tiles_c) * 32;
  in += b * rows * cols;
  out += b * rows * cols;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][i];
  }
}

// ---------------------------------------------------------------- whole channel runs, in units
// U: uint4, uint2, unsigned or unsigned short; `cu` a pixel's channels in units.

// Every input pixel (f, i, j) goes to the four output pixels (f, 2i + a, 2j + b).
template <typename U>
__global__ void upsample2x_kernel(const U* x, U* y, int64_t t, int64_t h, int64_t w, int64_t cu) {
  const int64_t pixels = t * h * w;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % w, i = (p / w) % h, f = p / (w * h);
    const U* src = x + p * cu;
    U* top = y + ((f * 2 * h + 2 * i) * 2 * w + 2 * j) * cu;
    U* bottom = top + 2 * w * cu;
    for (int64_t u = threadIdx.x; u < cu; u += blockDim.x) {
      const U v = src[u];
      top[u] = v;
      top[cu + u] = v;
      bottom[u] = v;
      bottom[cu + u] = v;
    }
  }
}

// y [to, ho, wo, cou] from x [t, h, w, cu] placed at (0, top, left, 0), zeros elsewhere
// (to >= t, cou >= cu: also the channel padding of the conv's operands).
template <typename U>
__global__ void pad_zero_kernel(const U* x, U* y, int64_t t, int64_t h, int64_t w, int64_t cu,
                                int64_t to, int64_t ho, int64_t wo, int64_t cou, int top,
                                int left) {
  const int64_t pixels = to * ho * wo;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % wo - left, i = (p / wo) % ho - top, f = p / (wo * ho);
    const bool inside = f < t && i >= 0 && i < h && j >= 0 && j < w;
    const U* src = inside ? x + ((f * h + i) * w + j) * cu : nullptr;
    U* dst = y + p * cou;
    for (int64_t u = threadIdx.x; u < cou; u += blockDim.x) dst[u] = (src && u < cu) ? src[u] : U{};
  }
}

// Output pixel (f, i, j) of [t + front, h + 2 side, w + 2 side] copies input pixel
// (max(f - front, 0), clamp(i - side), clamp(j - side)).
template <typename U>
__global__ void pad_replicate_kernel(const U* x, U* y, int64_t t, int64_t h, int64_t w, int64_t cu,
                                     int front, int side) {
  const int64_t to = t + front, ho = h + 2 * side, wo = w + 2 * side, pixels = to * ho * wo;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % wo, i = (p / wo) % ho, f = p / (wo * ho);
    const int64_t sf = max(f - front, int64_t{0});
    const int64_t si = min(max(i - side, int64_t{0}), h - 1);
    const int64_t sj = min(max(j - side, int64_t{0}), w - 1);
    const U* src = x + ((sf * h + si) * w + sj) * cu;
    U* dst = y + p * cu;
    for (int64_t u = threadIdx.x; u < cu; u += blockDim.x) dst[u] = src[u];
  }
}

// Small side [t, h, w, 4 rt cu] over its pixels: the run r = (r1 * 2 + r2) * 2 + r3 of a pixel's
// channels <-> big pixel (f rt + r1, 2i + r2, 2j + r3) of [t rt, 2h, 2w, cu]. `inverse` writes the
// big side.
template <typename U>
__global__ void space_to_channels_kernel(const U* x, U* y, int64_t t, int64_t h, int64_t w,
                                         int64_t cu, int rt, bool inverse) {
  const int64_t pixels = t * h * w, units = 4 * rt * cu;
  for (int64_t p = first_pixel(); p < pixels; p += pixel_step()) {
    const int64_t j = p % w, i = (p / w) % h, f = p / (w * h);
    for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
      const int64_t r = u / cu, cc = u - r * cu;
      const int64_t r3 = r & 1, r2 = (r >> 1) & 1, r1 = r >> 2;
      const int64_t s = p * units + u;
      const int64_t b = (((f * rt + r1) * 2 * h + 2 * i + r2) * 2 * w + 2 * j + r3) * cu + cc;
      if (inverse)
        y[b] = x[s];
      else
        y[s] = x[b];
    }
  }
}

// ---------------------------------------------------------------- launch helpers

size_t elt_size(EType t) { return t == EType::BF16 ? 2 : 4; }

// Pixel-major blocks: threadIdx.x over `lanes` channels (a power of two up to a warp, so a warp
// covers whole pixels when they have few channels), threadIdx.y over pixels.
struct PixelLaunch {
  dim3 grid, block;
};
PixelLaunch pixel_launch(int64_t pixels, int64_t lanes) {
  unsigned bx = 1;
  while (bx < 32 && static_cast<int64_t>(bx) < lanes) bx <<= 1;
  const unsigned by = kThreads / bx;
  return {dim3(grid_for(pixels, static_cast<int>(by))), dim3(bx, by)};
}

// Runs f with a value of the element type of `t` (float or __nv_bfloat16).
template <typename F>
void with_type(EType t, F&& f) {
  if (t == EType::BF16)
    f(__nv_bfloat16{});
  else
    f(float{});
}

// Runs f with a value of the widest unit type whose size divides every byte count and address
// given (2 bytes always does: the elements are 2 or 4 bytes).
template <typename F>
void with_unit(std::initializer_list<uint64_t> bytes, F&& f) {
  uint64_t all = 0;
  for (uint64_t b : bytes) all |= b;
  if (all % 16 == 0)
    f(uint4{});
  else if (all % 8 == 0)
    f(uint2{});
  else if (all % 4 == 0)
    f(0u);
  else
    f(static_cast<unsigned short>(0));
}
uint64_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

}  // namespace

void launch_channel_bias(void* y, EType t, const float* bias, int64_t pixels, int64_t c,
                         cudaStream_t s) {
  if (!pixels || !c) return;
  const PixelLaunch l = pixel_launch(pixels, c);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    channel_bias_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<T*>(y), bias, pixels, c);
  });
}

void launch_take_channels(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, EType t,
                          int64_t pixels, int64_t channels, const float* bias, cudaStream_t s) {
  if (!pixels || !channels) return;
  const PixelLaunch l = pixel_launch(pixels, channels);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    take_channels_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<const T*>(src), src_pitch,
                                                       static_cast<T*>(dst), dst_pitch, pixels,
                                                       channels, bias);
  });
}

void launch_channel_rms_norm(const void* x, EType t, const float* gamma, void* y, int64_t pixels,
                             int64_t c, bool silu, cudaStream_t s) {
  if (!pixels || !c) return;
  const unsigned blocks = grid_for(pixels, kThreads / 32);
  const float scale = sqrtf(static_cast<float>(c));
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    channel_rms_norm_kernel<T><<<blocks, kThreads, 0, s>>>(
        static_cast<const T*>(x), gamma, static_cast<T*>(y), pixels, c, scale, silu);
  });
}

void launch_upsample_nearest2x(const void* x, void* y, EType t, int64_t frames, int64_t h,
                               int64_t w, int64_t c, cudaStream_t s) {
  const int64_t pixels = frames * h * w, run = c * static_cast<int64_t>(elt_size(t));
  if (!pixels || !c) return;
  with_unit({static_cast<uint64_t>(run), addr(x), addr(y)}, [&](auto unit) {
    using U = decltype(unit);
    const int64_t cu = run / static_cast<int64_t>(sizeof(U));
    const PixelLaunch l = pixel_launch(pixels, cu);
    upsample2x_kernel<U>
        <<<l.grid, l.block, 0, s>>>(static_cast<const U*>(x), static_cast<U*>(y), frames, h, w, cu);
  });
}

void launch_pad_zero(const void* x, void* y, EType t, const std::array<int64_t, 4>& xs,
                     const std::array<int64_t, 4>& ys, int top, int left, cudaStream_t s) {
  const int64_t pixels = ys[0] * ys[1] * ys[2];
  const int64_t e = static_cast<int64_t>(elt_size(t));
  if (!pixels || !ys[3]) return;
  with_unit({static_cast<uint64_t>(xs[3] * e), static_cast<uint64_t>(ys[3] * e), addr(x), addr(y)},
            [&](auto unit) {
              using U = decltype(unit);
              const int64_t u = static_cast<int64_t>(sizeof(U));
              const int64_t cu = xs[3] * e / u, cou = ys[3] * e / u;
              const PixelLaunch l = pixel_launch(pixels, cou);
              pad_zero_kernel<U><<<l.grid, l.block, 0, s>>>(
                  static_cast<const U*>(x), static_cast<U*>(y), xs[0], xs[1], xs[2], cu, ys[0],
                  ys[1], ys[2], cou, top, left);
            });
}

void launch_avg_down3d(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                       int64_t c, int64_t out_c, int ft, int fs, cudaStream_t s) {
  const int pad = static_cast<int>((ft - frames % ft) % ft);
  const int64_t to = (frames + pad) / ft, ho = h / fs, wo = w / fs, pixels = to * ho * wo;
  if (!pixels || !out_c) return;
  const int group = static_cast<int>(c * ft * fs * fs / out_c);
  const PixelLaunch l = pixel_launch(pixels, out_c);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    avg_down3d_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), h,
                                                    w, c, to, ho, wo, static_cast<int>(out_c), ft,
                                                    fs, pad, group);
  });
}

void launch_dup_up3d(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                     int64_t c, int64_t out_c, int ft, int fs, int skip, cudaStream_t s) {
  const int64_t to = frames * ft - skip, pixels = to * h * fs * w * fs;
  if (pixels <= 0 || !out_c) return;
  const int repeats = static_cast<int>(out_c * ft * fs * fs / c);
  const PixelLaunch l = pixel_launch(pixels, out_c);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    dup_up3d_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), h,
                                                  w, c, to, static_cast<int>(out_c), ft, fs, skip,
                                                  repeats);
  });
}

void launch_space_to_channels2(const void* x, void* y, EType t, int64_t frames, int64_t h,
                               int64_t w, int64_t c, bool inverse, cudaStream_t s) {
  const int64_t pixels = frames * h * w;
  if (!pixels || !c) return;
  const PixelLaunch l = pixel_launch(pixels, 4 * c);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    space_to_channels2_kernel<T><<<l.grid, l.block, 0, s>>>(
        static_cast<const T*>(x), static_cast<T*>(y), frames, h, w, c, inverse);
  });
}

void launch_pad_replicate(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                          int64_t c, int front, int side, cudaStream_t s) {
  const int64_t pixels = (frames + front) * (h + 2 * side) * (w + 2 * side);
  const int64_t run = c * static_cast<int64_t>(elt_size(t));
  if (!pixels || !c) return;
  with_unit({static_cast<uint64_t>(run), addr(x), addr(y)}, [&](auto unit) {
    using U = decltype(unit);
    const int64_t cu = run / static_cast<int64_t>(sizeof(U));
    const PixelLaunch l = pixel_launch(pixels, cu);
    pad_replicate_kernel<U><<<l.grid, l.block, 0, s>>>(static_cast<const U*>(x), static_cast<U*>(y),
                                                       frames, h, w, cu, front, side);
  });
}

void launch_space_to_channels(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                              int64_t c, int rt, bool inverse, cudaStream_t s) {
  const int64_t pixels = frames * h * w, run = c * static_cast<int64_t>(elt_size(t));
  if (!pixels || !c) return;
  with_unit({static_cast<uint64_t>(run), addr(x), addr(y)}, [&](auto unit) {
    using U = decltype(unit);
    const int64_t cu = run / static_cast<int64_t>(sizeof(U));
    const PixelLaunch l = pixel_launch(pixels, 4 * rt * cu);
    space_to_channels_kernel<U><<<l.grid, l.block, 0, s>>>(
        static_cast<const U*>(x), static_cast<U*>(y), frames, h, w, cu, rt, inverse);
  });
}

void launch_channel_group_mean(const void* x, void* y, EType t, int64_t pixels, int64_t c,
                               int groups, cudaStream_t s) {
  if (!pixels || !c) return;
  const PixelLaunch l = pixel_launch(pixels, c);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    channel_group_mean_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<const T*>(x),
                                                            static_cast<T*>(y), pixels, c, groups);
  });
}

void launch_channel_repeat(const void* x, void* y, EType t, int64_t pixels, int64_t c, int repeats,
                           cudaStream_t s) {
  if (!pixels || !c) return;
  const PixelLaunch l = pixel_launch(pixels, c * repeats);
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    channel_repeat_kernel<T><<<l.grid, l.block, 0, s>>>(static_cast<const T*>(x),
                                                        static_cast<T*>(y), pixels, c, repeats);
  });
}

void launch_transpose(const void* in, void* out, EType t, int64_t batch, int64_t rows, int64_t cols,
                      cudaStream_t s) {
  if (!batch || !rows || !cols) return;
  const int64_t tiles_r = (rows + 31) / 32, tiles_c = (cols + 31) / 32;
  const dim3 grid(static_cast<unsigned>(tiles_r * tiles_c), static_cast<unsigned>(batch));
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    transpose_kernel<T><<<grid, dim3(32, 8), 0, s>>>(static_cast<const T*>(in),
                                                     static_cast<T*>(out), rows, cols, tiles_c);
  });
}

void launch_softmax_rows(const float* scores, void* probs, EType t, int64_t rows, int64_t cols,
                         float scale, cudaStream_t s) {
  if (!rows || !cols) return;
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    softmax_rows_kernel<T>
        <<<static_cast<unsigned>(rows), 512, 0, s>>>(scores, static_cast<T*>(probs), cols, scale);
  });
}

}  // namespace fisdit::cuda
