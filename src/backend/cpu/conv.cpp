// The video VAE primitives of backend/cpu/conv.h (why conv3d is tiled im2col + GEMM: there).
#include "backend/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit::cpu {

namespace {
// Scratch budget of one im2col tile (floats): 16 MB keeps tiles of a few hundred pixels even at
// the VAE's widest layers (K = 384 * 27).
constexpr int64_t kColBudget = int64_t{4} << 20;
constexpr int kCoBlock = 8;
constexpr int kPixBlock = 64;
constexpr int64_t kGather = 32;  // pixels per im2col block

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

// out[p * cout + co] = bias[co] + sum_k w[co * K + k] * rows[k][p] for p < np: channels-last
// output rows. Each task keeps a kCoBlock x kPixBlock accumulator tile; the inner loop runs over
// independent pixels, so it vectorises without reassociating the sum over k (which stays in
// order).
void gemm_rows(const float* w, int64_t cout, int64_t k_total, const float* const* rows, int64_t np,
               const float* bias, float* out) {
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
      const int64_t co0 = cb * kCoBlock, nco = std::min<int64_t>(kCoBlock, cout - co0);
      for (int64_t p = 0; p < n; ++p) {
        float* o = out + (p0 + p) * cout + co0;  // the block's channels of one pixel: one run
        for (int64_t i = 0; i < nco; ++i) o[i] = acc[i][p] + (bias ? bias[co0 + i] : 0.0f);
      }
    }
  }
}
}  // namespace

void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
            Tensor& out) {
  const Shape& os = out.shape();  // conv3d_output_shape, checked by Backend::conv3d
  const int64_t h = x.dim(1), wd = x.dim(2), cin = x.dim(3);
  const int64_t cout = w.dim(0), kt = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  const int64_t t_out = os[0], ho = os[1], wo = os[2], pix = ho * wo, taps = kt * kh * kw,
                k_total = taps * cin;
  const float* px = x.f32();
  const float* pw = w.f32();
  const float* pb = bias ? bias->f32() : nullptr;
  float* po = out.f32();
  int64_t tile = std::clamp<int64_t>(kColBudget / k_total, kPixBlock, pix);
  tile = std::min(pix, (tile + kPixBlock - 1) / kPixBlock * kPixBlock);
  // col: the tile's im2col columns, one row of `tile` pixels per k = ((dt kh + dh) kw + dw) Cin +
  // ci (the weight's order). Taps in the padding read a row of zeros.
  std::vector<float> col(static_cast<size_t>(k_total * tile)), zeros(static_cast<size_t>(cin));
  std::vector<const float*> rows(static_cast<size_t>(k_total));
  for (int64_t k = 0; k < k_total; ++k) rows[static_cast<size_t>(k)] = col.data() + k * tile;
  for (int64_t t = 0; t < t_out; ++t) {
    const int64_t t0 = t * p.stride_t;
    for (int64_t p0 = 0; p0 < pix; p0 += tile) {
      const int64_t np = std::min(tile, pix - p0);
      // im2col in blocks of kGather pixels per kernel tap: the block's source pixels (or the
      // padding) once, then for each input channel the block's values into that k's row; the
      // kGather source pixels' cache lines serve consecutive channels.
      const int64_t blocks = (np + kGather - 1) / kGather;
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t tap = 0; tap < taps; ++tap) {
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t dw = tap % kw, dh = (tap / kw) % kh, dt = tap / (kw * kh);
          const int64_t q0 = b * kGather, n = std::min(kGather, np - q0);
          const float* src[kGather];
          for (int64_t q = 0; q < n; ++q) {
            const int64_t oi = (p0 + q0 + q) / wo, oj = (p0 + q0 + q) % wo;
            const int64_t ii = oi * p.stride_h - p.pad_top + dh,
                          jj = oj * p.stride_w - p.pad_left + dw;
            src[q] = ii >= 0 && ii < h && jj >= 0 && jj < wd
                         ? px + (((t0 + dt) * h + ii) * wd + jj) * cin
                         : zeros.data();
          }
          for (int64_t ci = 0; ci < cin; ++ci) {
            float* dst = col.data() + (tap * cin + ci) * tile + q0;
            for (int64_t q = 0; q < n; ++q) dst[q] = src[q][ci];
          }
        }
      }
      gemm_rows(pw, cout, k_total, rows.data(), np, pb, po + (t * pix + p0) * cout);
    }
  }
}

void upsample_nearest2x(const Tensor& x, Tensor& out) {
  const int64_t t = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < t; ++f)
    for (int64_t i = 0; i < 2 * h; ++i) {
      const float* src = px + (f * h + i / 2) * w * c;
      float* dst = po + (f * 2 * h + i) * 2 * w * c;
      for (int64_t j = 0; j < 2 * w; ++j)
        std::copy(src + (j / 2) * c, src + (j / 2 + 1) * c, dst + j * c);
    }
}

void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) {
  const int64_t c = x.dim(-1), n = x.numel() / c;
  const float* px = x.f32();
  const float* pg = gamma.f32();
  float* po = out.f32();
  const float scale = std::sqrt(static_cast<float>(c));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* r = px + i * c;
    double sq = 0;
    for (int64_t ch = 0; ch < c; ++ch) sq += static_cast<double>(r[ch]) * r[ch];
    const float norm = static_cast<float>(std::max(std::sqrt(sq), 1e-12));
    float* o = po + i * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float v = r[ch] / norm * scale * pg[ch];
      o[ch] = silu ? v / (1.0f + std::exp(-v)) : v;
    }
  }
}

// softmax(q_i k_j^T * scale) v over the first `keys` rows of k and v, for the query rows i of
// q; all [rows, c] row-major. The reference of frame_attention and causal_video_attention.
void attend(const float* q, const float* k, const float* v, float* out, int64_t queries, int64_t c,
            const std::function<int64_t(int64_t)>& keys_of) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(c));
#pragma omp parallel
  {
    std::vector<float> score, acc(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < queries; ++i) {
      const int64_t keys = keys_of(i);
      score.resize(static_cast<size_t>(keys));
      const float* qi = q + i * c;
      float mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        const float* kj = k + j * c;
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
        const float* vj = v + j * c;
        for (int64_t ch = 0; ch < c; ++ch) acc[static_cast<size_t>(ch)] += pj * vj[ch];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t ch = 0; ch < c; ++ch) out[i * c + ch] = acc[static_cast<size_t>(ch)] * inv;
    }
  }
}

void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const int64_t t_count = q.dim(0), n = q.dim(1) * q.dim(2), c = q.dim(3);
  for (int64_t t = 0; t < t_count; ++t) {
    const int64_t off = t * n * c;
    attend(q.f32() + off, k.f32() + off, v.f32() + off, out.f32() + off, n, c,
           [n](int64_t) { return n; });
  }
}

void causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const int64_t t_count = q.dim(0), n = q.dim(1) * q.dim(2), c = q.dim(3);
  // Query i (frame i / n) sees every pixel of its own frame and the earlier ones.
  attend(q.f32(), k.f32(), v.f32(), out.f32(), t_count * n, c,
         [n](int64_t i) { return (i / n + 1) * n; });
}

void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const int64_t t = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), out_c = out.dim(3);
  const int64_t pad = (ft - t % ft) % ft, to = (t + pad) / ft, ho = h / fs, wo = w / fs;
  const int64_t factor = int64_t{ft} * fs * fs;
  const int64_t group = c * factor / out_c;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < to; ++f) {
    for (int64_t i = 0; i < ho; ++i) {
      for (int64_t j = 0; j < wo; ++j) {
        for (int64_t o = 0; o < out_c; ++o) {
          double sum = 0;
          for (int64_t g = 0; g < group; ++g) {
            // vae2_2.py's order of the (c, ft, fs, fs) neighbourhood.
            const int64_t k = o * group + g, ci = k / factor, r = k % factor;
            const int64_t it = r / (fs * fs), ih = (r / fs) % fs, iw = r % fs;
            const int64_t tf = f * ft + it - pad;  // padded frames are zeros
            if (tf >= 0) sum += px[((tf * h + i * fs + ih) * w + j * fs + iw) * c + ci];
          }
          po[((f * ho + i) * wo + j) * out_c + o] = static_cast<float>(sum / group);
        }
      }
    }
  }
}

void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const int64_t t = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), out_c = out.dim(3);
  const int64_t factor = int64_t{ft} * fs * fs;
  const int64_t to = t * ft - skip, ho = h * fs, wo = w * fs;
  const int64_t repeats = out_c * factor / c;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < to; ++f) {
    for (int64_t i = 0; i < ho; ++i) {
      const int64_t tf = f + skip, ts = tf / ft, it = tf % ft, hs = i / fs, ih = i % fs;
      for (int64_t j = 0; j < wo; ++j) {
        const int64_t ws = j / fs, iw = j % fs;
        for (int64_t o = 0; o < out_c; ++o) {
          const int64_t src = (o * factor + (it * fs + ih) * fs + iw) / repeats;
          po[((f * ho + i) * wo + j) * out_c + o] = px[((ts * h + hs) * w + ws) * c + src];
        }
      }
    }
  }
}

void space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const Tensor& big = inverse ? out : x;
  const int64_t t = big.dim(0), h = big.dim(1) / 2, w = big.dim(2) / 2, c = big.dim(3);
  const float* src = x.f32();
  float* dst = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t f = 0; f < t; ++f)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t r = 0; r < 2; ++r)
            for (int64_t q = 0; q < 2; ++q) {
              // Small channel ci*4 + r*2 + q holds big pixel (2i + q, 2j + r).
              const int64_t s = ((f * h + i) * w + j) * 4 * c + ci * 4 + r * 2 + q;
              const int64_t b = ((f * 2 * h + 2 * i + q) * 2 * w + 2 * j + r) * c + ci;
              if (inverse)
                dst[b] = src[s];
              else
                dst[s] = src[b];
            }
}

}  // namespace fisdit::cpu
