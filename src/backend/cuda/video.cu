// Kernels of the video VAE ops on F32 [C, T, H, W] tensors (fp32 math): per-channel bias, the
// channel RMS norm (+ SiLU), nearest 2x upsampling, zero padding, Wan 2.2 AvgDown3D / DupUp3D /
// 2x2 patchify, and the row softmax of the frame attention.
#include "backend/cuda/kernel_util.cuh"
#include "backend/cuda/video.cuh"

namespace fisdit::cuda {

namespace {

__global__ void channel_bias_kernel(float* y, const float* bias, int64_t c, int64_t inner) {
  const int64_t n = c * inner;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] += bias[i / inner];
}

// One thread per pixel; the channel loop reads coalesced rows of neighbouring pixels.
__global__ void channel_rms_norm_kernel(const float* x, const float* gamma, float* y, int64_t c,
                                        int64_t n, float scale, bool silu) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    double sq = 0;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float v = x[ch * n + i];
      sq += static_cast<double>(v) * v;
    }
    const float norm = static_cast<float>(fmax(sqrt(sq), 1e-12));
    for (int64_t ch = 0; ch < c; ++ch) {
      const float v = x[ch * n + i] / norm * scale * gamma[ch];
      y[ch * n + i] = silu ? v / (1.0f + expf(-v)) : v;
    }
  }
}

__global__ void upsample2x_kernel(const float* x, float* y, int64_t planes, int64_t h, int64_t w) {
  const int64_t ho = 2 * h, wo = 2 * w, n = planes * ho * wo;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = i % wo, r = (i / wo) % ho, pl = i / (ho * wo);
    y[i] = x[(pl * h + r / 2) * w + j / 2];
  }
}

__global__ void pad_kernel(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int top,
                           int left, int64_t ho, int64_t wo) {
  const int64_t n = planes * ho * wo;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = i % wo - left, r = (i / wo) % ho - top, pl = i / (ho * wo);
    y[i] = (r >= 0 && r < h && j >= 0 && j < w) ? x[(pl * h + r) * w + j] : 0.0f;
  }
}

__global__ void avg_down3d_kernel(const float* x, float* y, int64_t t, int64_t h, int64_t w,
                                  int64_t out_c, int ft, int fs, int64_t pad, int64_t group) {
  const int64_t to = (t + pad) / ft, ho = h / fs, wo = w / fs, n = out_c * to * ho * wo;
  const int64_t factor = int64_t{ft} * fs * fs;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = idx % wo, i = (idx / wo) % ho, f = (idx / (wo * ho)) % to,
                  o = idx / (wo * ho * to);
    double sum = 0;
    for (int64_t g = 0; g < group; ++g) {
      const int64_t k = o * group + g, ci = k / factor, r = k % factor;
      const int64_t it = r / (fs * fs), ih = (r / fs) % fs, iw = r % fs;
      const int64_t tf = f * ft + it - pad;
      if (tf >= 0) sum += x[((ci * t + tf) * h + i * fs + ih) * w + j * fs + iw];
    }
    y[idx] = static_cast<float>(sum / group);
  }
}

__global__ void dup_up3d_kernel(const float* x, float* y, int64_t t, int64_t h, int64_t w,
                                int64_t out_c, int ft, int fs, int skip, int64_t repeats) {
  const int64_t to = t * ft - skip, ho = h * fs, wo = w * fs, n = out_c * to * ho * wo;
  const int64_t factor = int64_t{ft} * fs * fs;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = idx % wo, i = (idx / wo) % ho, f = (idx / (wo * ho)) % to,
                  o = idx / (wo * ho * to);
    const int64_t tf = f + skip, ts = tf / ft, it = tf % ft;
    const int64_t src = (o * factor + (it * fs + i % fs) * fs + j % fs) / repeats;
    y[idx] = x[((src * t + ts) * h + i / fs) * w + j / fs];
  }
}

// Index over the small side [4C, T, H, W]; `inverse` writes the big side.
__global__ void space_to_channels2_kernel(const float* x, float* y, int64_t c, int64_t t, int64_t h,
                                          int64_t w, bool inverse) {
  const int64_t n = 4 * c * t * h * w;
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < n;
       s += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = s % w, i = (s / w) % h, f = (s / (w * h)) % t, cc = s / (w * h * t);
    const int64_t ci = cc / 4, r = (cc / 2) % 2, q = cc % 2;
    const int64_t b = ((ci * t + f) * 2 * h + 2 * i + q) * 2 * w + 2 * j + r;
    if (inverse)
      y[b] = x[s];
    else
      y[s] = x[b];
  }
}

__global__ void pad_replicate_kernel(const float* x, float* y, int64_t c, int64_t t, int64_t h,
                                     int64_t w, int front, int side) {
  const int64_t to = t + front, ho = h + 2 * side, wo = w + 2 * side, n = c * to * ho * wo;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < n;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = o % wo, i = (o / wo) % ho, f = (o / (wo * ho)) % to, ch = o / (wo * ho * to);
    const int64_t sf = max(f - front, int64_t{0});
    const int64_t si = min(max(i - side, int64_t{0}), h - 1);
    const int64_t sj = min(max(j - side, int64_t{0}), w - 1);
    y[o] = x[((ch * t + sf) * h + si) * w + sj];
  }
}

// Index over the small side [4 rt c, t, h, w]; `inverse` writes the big side.
__global__ void space_to_channels_kernel(const float* x, float* y, int64_t c, int64_t t, int64_t h,
                                         int64_t w, int rt, bool inverse) {
  const int64_t n = 4 * rt * c * t * h * w;
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < n;
       s += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = s % w, i = (s / w) % h, f = (s / (w * h)) % t, oc = s / (w * h * t);
    const int64_t ch = oc % c, r = oc / c, r3 = r % 2, r2 = (r / 2) % 2, r1 = r / 4;
    const int64_t b = ((ch * t * rt + f * rt + r1) * 2 * h + 2 * i + r2) * 2 * w + 2 * j + r3;
    if (inverse)
      y[b] = x[s];
    else
      y[s] = x[b];
  }
}

__global__ void channel_group_mean_kernel(const float* x, float* y, int64_t c, int64_t n,
                                          int groups) {
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < c * n;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ch = o / n, i = o % n;
    float sum = 0;
    for (int g = 0; g < groups; ++g) sum += x[(ch * groups + g) * n + i];
    y[o] = sum / static_cast<float>(groups);
  }
}

__global__ void channel_repeat_kernel(const float* x, float* y, int64_t c, int64_t n, int repeats) {
  const int64_t total = c * repeats * n;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total;
       o += int64_t{gridDim.x} * blockDim.x)
    y[o] = x[(o / n) / repeats * n + o % n];
}

// In place on rows of `cols` logits: softmax(scale * s). One block per row.
__global__ void softmax_rows_kernel(float* s, int64_t cols, float scale) {
  __shared__ float scratch[33];
  float* row = s + blockIdx.x * cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, row[j] * scale);
  mx = block_max(mx, scratch);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float e = expf(row[j] * scale - mx);
    row[j] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

// out[b, c, r] = in[b, r, c] for in [batch, rows, cols]: 32x32 tiles through shared memory,
// tiles numbered along blockIdx.x (rows or cols may be in the millions), batch along blockIdx.y.
__global__ void transpose_kernel(const float* in, float* out, int64_t rows, int64_t cols,
                                 int64_t tiles_c) {
  __shared__ float tile[32][33];
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

constexpr int kThreads = 256;

}  // namespace

void launch_transpose(const float* in, float* out, int64_t batch, int64_t rows, int64_t cols,
                      cudaStream_t s) {
  if (!batch || !rows || !cols) return;
  const int64_t tiles_r = (rows + 31) / 32, tiles_c = (cols + 31) / 32;
  transpose_kernel<<<dim3(static_cast<unsigned>(tiles_r * tiles_c), static_cast<unsigned>(batch)),
                     dim3(32, 8), 0, s>>>(in, out, rows, cols, tiles_c);
}

void launch_channel_bias(float* y, const float* bias, int64_t c, int64_t inner, cudaStream_t s) {
  const int64_t n = c * inner;
  if (!n) return;
  channel_bias_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(y, bias, c, inner);
}

void launch_channel_rms_norm(const float* x, const float* gamma, float* y, int64_t c, int64_t n,
                             bool silu, cudaStream_t s) {
  if (!n) return;
  channel_rms_norm_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(
      x, gamma, y, c, n, sqrtf(static_cast<float>(c)), silu);
}

void launch_upsample_nearest2x(const float* x, float* y, int64_t planes, int64_t h, int64_t w,
                               cudaStream_t s) {
  const int64_t n = planes * 4 * h * w;
  if (!n) return;
  upsample2x_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, planes, h, w);
}

void launch_pad_spatial(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int top,
                        int bottom, int left, int right, cudaStream_t s) {
  const int64_t ho = h + top + bottom, wo = w + left + right, n = planes * ho * wo;
  if (!n) return;
  pad_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, planes, h, w, top, left, ho, wo);
}

void launch_avg_down3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                       int64_t out_c, int ft, int fs, cudaStream_t s) {
  const int64_t pad = (ft - t % ft) % ft;
  const int64_t n = out_c * ((t + pad) / ft) * (h / fs) * (w / fs);
  if (!n) return;
  const int64_t group = c * ft * fs * fs / out_c;
  avg_down3d_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, t, h, w, out_c, ft, fs, pad,
                                                               group);
}

void launch_dup_up3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                     int64_t out_c, int ft, int fs, int skip, cudaStream_t s) {
  const int64_t n = out_c * (t * ft - skip) * h * fs * w * fs;
  if (n <= 0) return;
  const int64_t repeats = out_c * ft * fs * fs / c;
  dup_up3d_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, t, h, w, out_c, ft, fs, skip,
                                                             repeats);
}

void launch_space_to_channels2(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                               bool inverse, cudaStream_t s) {
  const int64_t n = 4 * c * t * h * w;
  if (!n) return;
  space_to_channels2_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, c, t, h, w, inverse);
}

void launch_pad_replicate(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                          int front, int side, cudaStream_t s) {
  const int64_t n = c * (t + front) * (h + 2 * side) * (w + 2 * side);
  if (!n) return;
  pad_replicate_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, c, t, h, w, front, side);
}

void launch_space_to_channels(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                              int rt, bool inverse, cudaStream_t s) {
  const int64_t n = 4 * rt * c * t * h * w;
  if (!n) return;
  space_to_channels_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, y, c, t, h, w, rt,
                                                                      inverse);
}

void launch_channel_group_mean(const float* x, float* y, int64_t c, int64_t n, int groups,
                               cudaStream_t s) {
  if (!c || !n) return;
  channel_group_mean_kernel<<<grid_for(c * n, kThreads), kThreads, 0, s>>>(x, y, c, n, groups);
}

void launch_channel_repeat(const float* x, float* y, int64_t c, int64_t n, int repeats,
                           cudaStream_t s) {
  if (!c || !n) return;
  channel_repeat_kernel<<<grid_for(c * repeats * n, kThreads), kThreads, 0, s>>>(x, y, c, n,
                                                                                 repeats);
}

void launch_softmax_rows(float* scores, int64_t rows, int64_t cols, float scale, cudaStream_t s) {
  if (!rows || !cols) return;
  softmax_rows_kernel<<<static_cast<unsigned>(rows), 512, 0, s>>>(scores, cols, scale);
}

}  // namespace fisdit::cuda
