// The video VAE primitives of backend/cpu/conv.h (why conv3d is tiled im2col + GEMM: there).
#include "backend/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit::cpu {

namespace {
// Scratch budget of one im2col tile (floats): 16 MB keeps tiles of a few hundred pixels even at
// the VAE's widest layers (K = 384 * 27).
constexpr int64_t kColBudget = int64_t{4} << 20;
constexpr int kCoBlock = 8;
constexpr int kPixBlock = 64;

// acc[i][p] = sum_k wr[i][k] * rows[k][p0 + p] for i < kCoBlock, p < n, summed in k order.
// Compiled for AVX-512 and AVX2 besides the baseline and picked at run time: the vectors run
// over independent pixels and no FMA is enabled, so every clone gives the same bits.
__attribute__((target_clones("avx512f", "avx2", "default"))) void tile_kernel(
    const float* const* wr, int64_t k_total, const float* const* rows, int64_t p0, int64_t n,
    float (*acc)[kPixBlock]) {
  if (n == kPixBlock) {
    for (int64_t k = 0; k < k_total; ++k) {
      const float* c = rows[k] + p0;
      for (int i = 0; i < kCoBlock; ++i) {
        const float wv = wr[i][k];
        for (int p = 0; p < kPixBlock; ++p) acc[i][p] += wv * c[p];
      }
    }
  } else {
    for (int64_t k = 0; k < k_total; ++k) {
      const float* c = rows[k] + p0;
      for (int i = 0; i < kCoBlock; ++i) {
        const float wv = wr[i][k];
        for (int64_t p = 0; p < n; ++p) acc[i][p] += wv * c[p];
      }
    }
  }
}

// out[co * ldout + p] = bias[co] + sum_k w[co * K + k] * rows[k][p] for p < np.
// Each task keeps a kCoBlock x kPixBlock accumulator tile; the inner loop runs over independent
// pixels, so it vectorises without reassociating the sum over k (which stays in order).
void gemm_rows(const float* w, int64_t cout, int64_t k_total, const float* const* rows, int64_t np,
               const float* bias, float* out, int64_t ldout) {
  const int64_t co_blocks = (cout + kCoBlock - 1) / kCoBlock;
  const int64_t pix_blocks = (np + kPixBlock - 1) / kPixBlock;
  // Pixel blocks outermost: the output-channel blocks of one pixel block run one after another on
  // a thread, so that block's columns (K x kPixBlock floats) stay in its cache.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t pb = 0; pb < pix_blocks; ++pb) {
    for (int64_t cb = 0; cb < co_blocks; ++cb) {
      float acc[kCoBlock][kPixBlock];
      std::memset(acc, 0, sizeof acc);
      const float* wr[kCoBlock];
      for (int i = 0; i < kCoBlock; ++i)
        wr[i] = w + std::min(cb * kCoBlock + i, cout - 1) * k_total;  // extra rows not stored
      const int64_t p0 = pb * kPixBlock;
      const int64_t n = std::min<int64_t>(kPixBlock, np - p0);
      tile_kernel(wr, k_total, rows, p0, n, acc);
      for (int i = 0; i < kCoBlock; ++i) {
        const int64_t co = cb * kCoBlock + i;
        if (co >= cout) break;
        const float b = bias ? bias[co] : 0.0f;
        float* o = out + co * ldout + p0;
        for (int64_t p = 0; p < n; ++p) o[p] = acc[i][p] + b;
      }
    }
  }
}
}  // namespace

void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
            Tensor& out) {
  const Shape& os = out.shape();  // conv3d_output_shape, checked by Backend::conv3d
  const int64_t cin = x.dim(0), t_in = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t cout = w.dim(0), kt = w.dim(2), kh = w.dim(3), kw = w.dim(4);
  const int64_t t_out = os[1], ho = os[2], wo = os[3];
  const int64_t plane = h * wd, pix = ho * wo, k_total = cin * kt * kh * kw;
  const float* px = x.f32();
  const float* pw = w.f32();
  const float* pb = bias ? bias->f32() : nullptr;
  float* po = out.f32();
  // 1x1 spatial kernels with unit spatial stride and no padding read input rows in place
  // (pointwise convs, the temporal (k, 1, 1) convs); everything else goes through im2col.
  const bool direct = kh == 1 && kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
                      p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
  int64_t tile = pix;
  if (!direct) {
    tile = std::clamp<int64_t>(kColBudget / k_total, kPixBlock, pix);
    tile = std::min(pix, (tile + kPixBlock - 1) / kPixBlock * kPixBlock);
  }
  std::vector<float> col(direct ? 0 : static_cast<size_t>(k_total * tile));
  std::vector<const float*> rows(static_cast<size_t>(k_total));
  for (int64_t t = 0; t < t_out; ++t) {
    const int64_t t0 = t * p.stride_t;
    for (int64_t p0 = 0; p0 < pix; p0 += tile) {
      const int64_t np = std::min(tile, pix - p0);
      if (direct) {
        for (int64_t ci = 0; ci < cin; ++ci)
          for (int64_t dt = 0; dt < kt; ++dt)
            rows[static_cast<size_t>(ci * kt + dt)] = px + (ci * t_in + t0 + dt) * plane + p0;
      } else {
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < k_total; ++k) {
          const int64_t dw = k % kw, dh = (k / kw) % kh, dt = (k / (kw * kh)) % kt,
                        ci = k / (kw * kh * kt);
          const float* src = px + (ci * t_in + t0 + dt) * plane;
          float* dst = col.data() + k * tile;
          // One output row (or its part in this tile) at a time: zeros where the kernel tap
          // falls in the padding, a copy of the input row where it does not.
          int64_t oi = p0 / wo, oj = p0 % wo;
          for (int64_t q = 0; q < np;) {
            const int64_t run = std::min(wo - oj, np - q);
            const int64_t ii = oi * p.stride_h - p.pad_top + dh;
            float* d = dst + q;
            if (ii < 0 || ii >= h) {
              std::fill(d, d + run, 0.0f);
            } else if (p.stride_w == 1) {
              // jj = oj + j - pad_left + dw is inside [0, wd) for j in [lo, hi)
              const int64_t shift = oj - p.pad_left + dw;
              const int64_t lo = std::clamp<int64_t>(-shift, 0, run);
              const int64_t hi = std::clamp<int64_t>(wd - shift, lo, run);
              std::fill(d, d + lo, 0.0f);
              std::copy(src + ii * wd + shift + lo, src + ii * wd + shift + hi, d + lo);
              std::fill(d + hi, d + run, 0.0f);
            } else {
              for (int64_t j = 0; j < run; ++j) {
                const int64_t jj = (oj + j) * p.stride_w - p.pad_left + dw;
                d[j] = jj >= 0 && jj < wd ? src[ii * wd + jj] : 0.0f;
              }
            }
            q += run;
            oj = 0;
            ++oi;
          }
        }
        for (int64_t k = 0; k < k_total; ++k) rows[static_cast<size_t>(k)] = col.data() + k * tile;
      }
      gemm_rows(pw, cout, k_total, rows.data(), np, pb, po + t * pix + p0, t_out * pix);
    }
  }
}

void upsample_nearest2x(const Tensor& x, Tensor& out) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* src = px + pl * h * w;
    float* dst = po + pl * 4 * h * w;
    for (int64_t i = 0; i < 2 * h; ++i) {
      const float* s = src + (i / 2) * w;
      float* d = dst + i * 2 * w;
      for (int64_t j = 0; j < 2 * w; ++j) d[j] = s[j / 2];
    }
  }
}

void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) {
  const int64_t c = x.dim(0), n = x.numel() / c;
  const float* px = x.f32();
  const float* pg = gamma.f32();
  float* po = out.f32();
  const float scale = std::sqrt(static_cast<float>(c));
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * kBlock, m = std::min(kBlock, n - n0);
    double sq[kBlock] = {};
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* r = px + ch * n + n0;
      for (int64_t i = 0; i < m; ++i) sq[i] += static_cast<double>(r[i]) * r[i];
    }
    float inv[kBlock];
    for (int64_t i = 0; i < m; ++i) inv[i] = static_cast<float>(std::max(std::sqrt(sq[i]), 1e-12));
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* r = px + ch * n + n0;
      float* o = po + ch * n + n0;
      for (int64_t i = 0; i < m; ++i) {
        const float v = r[i] / inv[i] * scale * pg[ch];
        o[i] = silu ? v / (1.0f + std::exp(-v)) : v;
      }
    }
  }
}

void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const int64_t c = q.dim(0), t_count = q.dim(1), n = q.dim(2) * q.dim(3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c));
  std::vector<float> qt(static_cast<size_t>(n * c)), kt(qt.size()), vt(qt.size());
  for (int64_t t = 0; t < t_count; ++t) {
    // Transpose this frame to [pixels, C] so every dot product reads contiguous rows.
    const float* src[3] = {q.f32(), k.f32(), v.f32()};
    float* dst[3] = {qt.data(), kt.data(), vt.data()};
    for (int m = 0; m < 3; ++m) {
#pragma omp parallel for schedule(static)
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* s = src[m] + (ch * t_count + t) * n;
        for (int64_t i = 0; i < n; ++i) dst[m][i * c + ch] = s[i];
      }
    }
    float* po = out.f32();
#pragma omp parallel
    {
      std::vector<float> score(static_cast<size_t>(n)), acc(static_cast<size_t>(c));
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float* qi = qt.data() + i * c;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          const float* kj = kt.data() + j * c;
          float s = 0;
          for (int64_t ch = 0; ch < c; ++ch) s += qi[ch] * kj[ch];
          score[j] = s * scale;
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          score[j] = std::exp(score[j] - mx);
          sum += score[j];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float pj = score[j];
          const float* vj = vt.data() + j * c;
          for (int64_t ch = 0; ch < c; ++ch) acc[ch] += pj * vj[ch];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t ch = 0; ch < c; ++ch) po[(ch * t_count + t) * n + i] = acc[ch] * inv;
      }
    }
  }
}

Tensor concat_frames(const Tensor& a, const Tensor& b) {
  require(a.ndim() >= 2 && b.ndim() == a.ndim() && a.dim(0) == b.dim(0), "concat_frames",
          "cannot join " + shape_str(a.shape()) + " and " + shape_str(b.shape()));
  for (int i = 2; i < a.ndim(); ++i)
    require(a.dim(i) == b.dim(i), "concat_frames",
            "cannot join " + shape_str(a.shape()) + " and " + shape_str(b.shape()));
  Shape s = a.shape();
  s[1] = a.dim(1) + b.dim(1);
  Tensor out = Tensor::zeros(s);
  const int64_t c = a.dim(0), fa = a.numel() / c, fb = b.numel() / c;
  for (int64_t ch = 0; ch < c; ++ch) {
    if (fa) std::memcpy(out.f32() + ch * (fa + fb), a.f32() + ch * fa, fa * sizeof(float));
    if (fb) std::memcpy(out.f32() + ch * (fa + fb) + fa, b.f32() + ch * fb, fb * sizeof(float));
  }
  return out;
}

Tensor slice_frames(const Tensor& x, int64_t begin, int64_t end) {
  require(x.ndim() >= 2 && 0 <= begin && begin <= end && end <= x.dim(1), "slice_frames",
          "frames [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
              shape_str(x.shape()));
  Shape s = x.shape();
  s[1] = end - begin;
  Tensor out = Tensor::zeros(s);
  const int64_t c = x.dim(0), frame = x.numel() / (c * x.dim(1));
  const int64_t n = (end - begin) * frame;
  for (int64_t ch = 0; ch < c; ++ch)
    if (n)
      std::memcpy(out.f32() + ch * n, x.f32() + (ch * x.dim(1) + begin) * frame, n * sizeof(float));
  return out;
}

void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  const int64_t pad = (ft - t % ft) % ft, to = (t + pad) / ft, ho = h / fs, wo = w / fs;
  const int64_t factor = int64_t{ft} * fs * fs;
  const int64_t group = c * factor / out_c;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t o = 0; o < out_c; ++o) {
    for (int64_t f = 0; f < to; ++f) {
      for (int64_t i = 0; i < ho; ++i) {
        for (int64_t j = 0; j < wo; ++j) {
          double sum = 0;
          for (int64_t g = 0; g < group; ++g) {
            const int64_t k = o * group + g, ci = k / factor, r = k % factor;
            const int64_t it = r / (fs * fs), ih = (r / fs) % fs, iw = r % fs;
            const int64_t tf = f * ft + it - pad;  // padded frames are zeros
            if (tf >= 0) sum += px[((ci * t + tf) * h + i * fs + ih) * w + j * fs + iw];
          }
          po[((o * to + f) * ho + i) * wo + j] = static_cast<float>(sum / group);
        }
      }
    }
  }
}

void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  const int64_t factor = int64_t{ft} * fs * fs;
  const int64_t to = t * ft - skip, ho = h * fs, wo = w * fs;
  const int64_t repeats = out_c * factor / c;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t o = 0; o < out_c; ++o) {
    for (int64_t f = 0; f < to; ++f) {
      const int64_t tf = f + skip, ts = tf / ft, it = tf % ft;
      for (int64_t i = 0; i < ho; ++i) {
        const int64_t hs = i / fs, ih = i % fs;
        for (int64_t j = 0; j < wo; ++j) {
          const int64_t ws = j / fs, iw = j % fs;
          const int64_t src = (o * factor + (it * fs + ih) * fs + iw) / repeats;
          po[((o * to + f) * ho + i) * wo + j] = px[((src * t + ts) * h + hs) * w + ws];
        }
      }
    }
  }
}

void space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const Tensor& big = inverse ? out : x;
  const int64_t c = big.dim(0), t = big.dim(1), h = big.dim(2) / 2, w = big.dim(3) / 2;
  const float* src = x.f32();
  float* dst = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t f = 0; f < t; ++f)
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t q = 0; q < 2; ++q)
          for (int64_t i = 0; i < h; ++i)
            for (int64_t j = 0; j < w; ++j) {
              const int64_t s = (((ci * 4 + r * 2 + q) * t + f) * h + i) * w + j;
              const int64_t b = ((ci * t + f) * 2 * h + 2 * i + q) * 2 * w + 2 * j + r;
              if (inverse)
                dst[b] = src[s];
              else
                dst[s] = src[b];
            }
}

}  // namespace fisdit::cpu
