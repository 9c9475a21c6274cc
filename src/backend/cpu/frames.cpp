// The CPU backend's frame ops: the FIS anchor gather, the linear reconstruction of skipped frames
// and its block delta form (FIS.md), and patchify / unpatchify of the latent (fp32 reference).
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                                  int64_t tokens_per_frame, Tensor& dst) {
  const int64_t num_frames = src.dim(0) / tokens_per_frame;
  const size_t frame_bytes = src.nbytes() / static_cast<size_t>(num_frames ? num_frames : 1);
  auto* out = static_cast<char*>(dst.raw());
  const auto* in = static_cast<const char*>(src.raw());
  for (size_t i = 0; i < frames.size(); ++i)
    std::memcpy(out + i * frame_bytes, in + static_cast<size_t>(frames[i]) * frame_bytes,
                frame_bytes);
}

void CpuBackend::do_interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                       int64_t tokens_per_frame, Tensor& dst, bool accumulate) {
  const int64_t a = static_cast<int64_t>(anchors.size());
  const int64_t frames = dst.dim(0) / tokens_per_frame, d = dst.dim(1);
  const float* ps = src.f32();
  float* pd = dst.f32();
  const int64_t frame_elems = tokens_per_frame * d;
  // For every frame: the slot of its left anchor a and the right anchor b (a == b on anchors).
  std::vector<int64_t> left(static_cast<size_t>(frames));
  for (int64_t s = 0; s < a; ++s) {
    const int64_t end = s + 1 < a ? anchors[s + 1] : anchors[s] + 1;
    for (int64_t f = anchors[s]; f < end; ++f) left[f] = s;
  }
#pragma omp parallel for schedule(static)
  for (int64_t f = 0; f < frames; ++f) {
    const int64_t s = left[f];
    const float* za = ps + s * frame_elems;
    float* out = pd + f * frame_elems;
    if (anchors[s] == f) {  // anchor frames copy Z exactly
      for (int64_t i = 0; i < frame_elems; ++i) out[i] = accumulate ? out[i] + za[i] : za[i];
      continue;
    }
    // Z_f = ((b - f) Z_a + (f - a) Z_b) / (b - a)   (FIS.md, Reconstruction)
    const float* zb = za + frame_elems;
    const float wa = static_cast<float>(anchors[s + 1] - f),
                wb = static_cast<float>(f - anchors[s]);
    const float span = static_cast<float>(anchors[s + 1] - anchors[s]);
    for (int64_t i = 0; i < frame_elems; ++i) {
      const float z = (wa * za[i] + wb * zb[i]) / span;
      out[i] = accumulate ? out[i] + z : z;
    }
  }
}

void CpuBackend::do_reconstruct_frames_delta(const Tensor& anchor_rows,
                                             const std::vector<int32_t>& anchors,
                                             int64_t tokens_per_frame, Tensor& x) {
  const int64_t a = static_cast<int64_t>(anchors.size());
  const int64_t frames = x.dim(0) / tokens_per_frame;
  const int64_t frame_elems = tokens_per_frame * x.dim(1);
  const float* py = anchor_rows.f32();
  float* px = x.f32();
  // Skipped frames first (they read the anchors' old values), then the anchors.
  std::vector<int64_t> left(static_cast<size_t>(frames));
  for (int64_t s = 0; s + 1 < a; ++s)
    for (int64_t f = anchors[s]; f < anchors[s + 1]; ++f) left[f] = s;
#pragma omp parallel for schedule(static)
  for (int64_t f = 0; f < frames; ++f) {
    const int64_t s = left[f];
    if (f == anchors.back() || anchors[s] == f) continue;
    const int64_t fa = anchors[s], fb = anchors[s + 1];
    const float* ya = py + s * frame_elems;
    const float* yb = ya + frame_elems;
    const float* xa = px + fa * frame_elems;
    const float* xb = px + fb * frame_elems;
    float* out = px + f * frame_elems;
    // Z_f = ((b - f) Z_a + (f - a) Z_b) / (b - a) of the update Z = Y - X  (FIS.md)
    const float wa = static_cast<float>(fb - f), wb = static_cast<float>(f - fa);
    const float span = static_cast<float>(fb - fa);
    for (int64_t i = 0; i < frame_elems; ++i)
      out[i] += (wa * (ya[i] - xa[i]) + wb * (yb[i] - xb[i])) / span;
  }
  for (int64_t s = 0; s < a; ++s)
    std::memcpy(px + anchors[s] * frame_elems, py + s * frame_elems,
                static_cast<size_t>(frame_elems) * sizeof(float));
}

void CpuBackend::do_patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) {
  const int64_t c = x.dim(0), f = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  const int64_t gf = f / pt, gh = h / ph, gw = w / pw, k = c * pt * ph * pw;
  const float* px = x.f32();
  float* po = out.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t a = 0; a < gf; ++a)
    for (int64_t b = 0; b < gh; ++b)
      for (int64_t e = 0; e < gw; ++e) {
        float* row = po + ((a * gh + b) * gw + e) * k;
        int64_t idx = 0;
        for (int64_t ch = 0; ch < c; ++ch)
          for (int i = 0; i < pt; ++i)
            for (int j = 0; j < ph; ++j)
              for (int l = 0; l < pw; ++l)
                row[idx++] = px[((ch * f + a * pt + i) * h + b * ph + j) * w + e * pw + l];
      }
}

void CpuBackend::do_unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                               int64_t grid_h, int64_t grid_w, Tensor& out) {
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  const int64_t c = x.dim(1) / (pt * ph * pw);
  const int64_t f = grid_f * pt, h = grid_h * ph, w = grid_w * pw;
  const float* px = x.f32();
  float* po = out.f32();
  // Token features are [pt, ph, pw, c] with c fastest (einsum 'fhwpqrc->cfphqwr').
  for (int64_t a = 0; a < grid_f; ++a)
    for (int64_t b = 0; b < grid_h; ++b)
      for (int64_t e = 0; e < grid_w; ++e) {
        const float* row = px + ((a * grid_h + b) * grid_w + e) * x.dim(1);
        for (int i = 0; i < pt; ++i)
          for (int j = 0; j < ph; ++j)
            for (int l = 0; l < pw; ++l)
              for (int64_t ch = 0; ch < c; ++ch)
                po[((ch * f + a * pt + i) * h + b * ph + j) * w + e * pw + l] =
                    row[((i * ph + j) * pw + l) * c + ch];
      }
}

}  // namespace fisdit
