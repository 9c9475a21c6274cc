// The CPU backend's HunyuanVideo 1.5 VAE ops (fp32 reference; arguments checked in backend.cpp):
// replicate padding, the (r1 r2 r3 c) space-to-channel rearrange, channel group means and
// repeats, and the frame-causal attention of the mid block.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) {
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t to = out.dim(1), ho = out.dim(2), wo = out.dim(3);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t f = 0; f < to; ++f) {
      const int64_t sf = std::max<int64_t>(f - front, 0);
      for (int64_t i = 0; i < ho; ++i) {
        const int64_t si = std::clamp<int64_t>(i - side, 0, h - 1);
        const float* row = px + ((ch * t + sf) * h + si) * w;
        float* dst = po + ((ch * to + f) * ho + i) * wo;
        for (int64_t j = 0; j < wo; ++j) dst[j] = row[std::clamp<int64_t>(j - side, 0, w - 1)];
      }
    }
}

void CpuBackend::do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) {
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  const int64_t c = big.dim(0), t = small.dim(1), h = small.dim(2), w = small.dim(3);
  const int64_t bt = big.dim(1), bh = big.dim(2), bw = big.dim(3);
  const float* src = x.f32();
  float* dst = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t oc = 0; oc < small.dim(0); ++oc)
    for (int64_t f = 0; f < t; ++f) {
      // Channel oc of the small side is ((r1 * 2 + r2) * 2 + r3) * C + ch.
      const int64_t ch = oc % c, r = oc / c, r3 = r % 2, r2 = (r / 2) % 2, r1 = r / 4;
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t s = ((oc * t + f) * h + i) * w + j;
          const int64_t b = ((ch * bt + f * rt + r1) * bh + 2 * i + r2) * bw + 2 * j + r3;
          if (inverse)
            dst[b] = src[s];
          else
            dst[s] = src[b];
        }
    }
}

void CpuBackend::do_channel_group_mean(const Tensor& x, int groups, Tensor& out) {
  const int64_t c = out.dim(0), n = out.numel() / std::max<int64_t>(c, 1);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0;  // the groups in order, as torch's mean over a small dim
      for (int g = 0; g < groups; ++g) sum += px[(ch * groups + g) * n + i];
      po[ch * n + i] = sum / static_cast<float>(groups);
    }
}

void CpuBackend::do_channel_repeat(const Tensor& x, int repeats, Tensor& out) {
  const int64_t c = x.dim(0), n = x.numel() / std::max<int64_t>(c, 1);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < c * repeats; ++o)
    std::copy(px + (o / repeats) * n, px + (o / repeats + 1) * n, po + o * n);
}

void CpuBackend::do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           Tensor& out) {
  const int64_t c = q.dim(0), t_count = q.dim(1), n = q.dim(2) * q.dim(3), tokens = t_count * n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c));
  // Tokens as rows [t * n, C] so every dot product reads contiguous memory.
  std::vector<float> qt(static_cast<size_t>(tokens * c)), kt(qt.size()), vt(qt.size());
  const float* src[3] = {q.f32(), k.f32(), v.f32()};
  float* dst[3] = {qt.data(), kt.data(), vt.data()};
  for (int m = 0; m < 3; ++m) {
#pragma omp parallel for schedule(static)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < tokens; ++i) dst[m][i * c + ch] = src[m][ch * tokens + i];
  }
  float* po = out.f32();
#pragma omp parallel
  {
    std::vector<float> score(static_cast<size_t>(tokens)), acc(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < tokens; ++i) {
      const int64_t keys = (i / n + 1) * n;  // every pixel of frames <= this one's
      const float* qi = qt.data() + i * c;
      float mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = kt.data() + j * c;
        float s = 0;
        for (int64_t ch = 0; ch < c; ++ch) s += qi[ch] * kj[ch];
        score[static_cast<size_t>(j)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      double sum = 0;
      for (int64_t j = 0; j < keys; ++j) {
        score[static_cast<size_t>(j)] = std::exp(score[static_cast<size_t>(j)] - mx);
        sum += score[static_cast<size_t>(j)];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < keys; ++j) {
        const float pj = score[static_cast<size_t>(j)];
        const float* vj = vt.data() + j * c;
        for (int64_t ch = 0; ch < c; ++ch) acc[static_cast<size_t>(ch)] += pj * vj[ch];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t ch = 0; ch < c; ++ch) po[ch * tokens + i] = acc[static_cast<size_t>(ch)] * inv;
    }
  }
}

}  // namespace fisdit
