// The CPU backend's HunyuanVideo 1.5 VAE ops on [T, H, W, C] F32 tensors (fp32 reference;
// arguments checked in backend.cpp): replicate padding, the (r1 r2 r3 c) space-to-channel
// rearrange, channel group means and repeats, and the frame-causal attention of the mid block.
#include <algorithm>

#include "backend/cpu/conv.h"
#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) {
  const int64_t h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t to = out.dim(0), ho = out.dim(1), wo = out.dim(2);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < to; ++f)
    for (int64_t i = 0; i < ho; ++i) {
      const int64_t sf = std::max<int64_t>(f - front, 0);
      const int64_t si = std::clamp<int64_t>(i - side, 0, h - 1);
      const float* row = px + (sf * h + si) * w * c;
      float* dst = po + (f * ho + i) * wo * c;
      for (int64_t j = 0; j < wo; ++j) {
        const int64_t sj = std::clamp<int64_t>(j - side, 0, w - 1);
        std::copy(row + sj * c, row + (sj + 1) * c, dst + j * c);
      }
    }
}

void CpuBackend::do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) {
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  const int64_t t = small.dim(0), h = small.dim(1), w = small.dim(2), sc = small.dim(3);
  const int64_t bh = big.dim(1), bw = big.dim(2), c = big.dim(3);
  const float* src = x.f32();
  float* dst = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < t; ++f)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        for (int64_t oc = 0; oc < sc; ++oc) {
          // Channel oc of the small side is ((r1 * 2 + r2) * 2 + r3) * C + ch.
          const int64_t ch = oc % c, r = oc / c, r3 = r % 2, r2 = (r / 2) % 2, r1 = r / 4;
          const int64_t s = ((f * h + i) * w + j) * sc + oc;
          const int64_t b = (((f * rt + r1) * bh + 2 * i + r2) * bw + 2 * j + r3) * c + ch;
          if (inverse)
            dst[b] = src[s];
          else
            dst[s] = src[b];
        }
}

void CpuBackend::do_channel_group_mean(const Tensor& x, int groups, Tensor& out) {
  const int64_t c = out.dim(-1), n = out.numel() / std::max<int64_t>(c, 1);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      float sum = 0;  // the groups in order, as torch's mean over a small dim
      for (int g = 0; g < groups; ++g) sum += px[(i * c + ch) * groups + g];
      po[i * c + ch] = sum / static_cast<float>(groups);
    }
}

void CpuBackend::do_channel_repeat(const Tensor& x, int repeats, Tensor& out) {
  const int64_t c = x.dim(-1), n = x.numel() / std::max<int64_t>(c, 1), oc = c * repeats;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < oc; ++o) po[i * oc + o] = px[i * c + o / repeats];
}

void CpuBackend::do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           Tensor& out) {
  cpu::causal_video_attention(q, k, v, out);
}

}  // namespace fisdit
