#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                               int64_t tokens_per_frame, Tensor& dst) {
  const char* op = "gather_frames";
  cpu::require(src.ndim() >= 1 && tokens_per_frame > 0 && src.dim(0) % tokens_per_frame == 0, op,
               "source rows " + shape_str(src.shape()) + " are not whole frames of " +
                   std::to_string(tokens_per_frame) + " tokens");
  const int64_t num_frames = src.dim(0) / tokens_per_frame;
  const size_t frame_bytes = src.nbytes() / static_cast<size_t>(num_frames ? num_frames : 1);
  cpu::require(dst.dtype() == src.dtype() && dst.nbytes() == frame_bytes * frames.size(), op,
               "destination " + shape_str(dst.shape()) + " does not hold " +
                   std::to_string(frames.size()) + " frames");
  auto* out = static_cast<char*>(dst.raw());
  const auto* in = static_cast<const char*>(src.raw());
  for (size_t i = 0; i < frames.size(); ++i) {
    cpu::require(frames[i] >= 0 && frames[i] < num_frames, op, "frame index out of range");
    std::memcpy(out + i * frame_bytes, in + static_cast<size_t>(frames[i]) * frame_bytes,
                frame_bytes);
  }
}

void CpuBackend::interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                    int64_t tokens_per_frame, Tensor& dst, bool accumulate) {
  const char* op = "interpolate_frames";
  cpu::require(src.ndim() == 2 && dst.ndim() == 2 && src.dim(1) == dst.dim(1), op,
               "expects [rows, channels] tensors with equal channels");
  const int64_t a = static_cast<int64_t>(anchors.size());
  cpu::require(src.dim(0) == a * tokens_per_frame, op, "source rows do not match the anchor count");
  cpu::require(dst.dim(0) % tokens_per_frame == 0, op, "destination rows are not whole frames");
  const int64_t frames = dst.dim(0) / tokens_per_frame, d = dst.dim(1);
  cpu::require(a >= 1 && anchors.front() == 0 && anchors.back() == frames - 1, op,
               "anchors must include the first and last frame");
  for (int64_t i = 1; i < a; ++i)
    cpu::require(anchors[i] > anchors[i - 1], op, "anchors must be strictly increasing");
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

void CpuBackend::reconstruct_frames_delta(const Tensor& anchor_rows,
                                          const std::vector<int32_t>& anchors,
                                          int64_t tokens_per_frame, Tensor& x) {
  const char* op = "reconstruct_frames_delta";
  cpu::require(anchor_rows.ndim() == 2 && x.ndim() == 2 && anchor_rows.dim(1) == x.dim(1), op,
               "expects [rows, channels] tensors with equal channels");
  cpu::require(anchor_rows.dtype() == DType::F32 && x.dtype() == DType::F32, op,
               "expects F32 tensors");
  const int64_t a = static_cast<int64_t>(anchors.size());
  cpu::require(tokens_per_frame > 0 && anchor_rows.dim(0) == a * tokens_per_frame, op,
               "anchor rows do not match the anchor count");
  cpu::require(x.dim(0) % tokens_per_frame == 0, op, "hidden state rows are not whole frames");
  const int64_t frames = x.dim(0) / tokens_per_frame;
  cpu::require(a >= 1 && anchors.front() == 0 && anchors.back() == frames - 1, op,
               "anchors must include the first and last frame");
  for (int64_t i = 1; i < a; ++i)
    cpu::require(anchors[i] > anchors[i - 1], op, "anchors must be strictly increasing");
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

void CpuBackend::patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) {
  const char* op = "patchify";
  cpu::require(x.ndim() == 4, op, "expects [C, F, H, W], got " + shape_str(x.shape()));
  const int64_t c = x.dim(0), f = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  cpu::require(f % pt == 0 && h % ph == 0 && w % pw == 0, op,
               "latent " + shape_str(x.shape()) + " is not divisible by the patch size");
  const int64_t gf = f / pt, gh = h / ph, gw = w / pw, k = c * pt * ph * pw;
  cpu::require(out.dim(0) == gf * gh * gw && out.dim(1) == k, op,
               "output " + shape_str(out.shape()) + " has the wrong shape");
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

void CpuBackend::unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                            int64_t grid_h, int64_t grid_w, Tensor& out) {
  const char* op = "unpatchify";
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  cpu::require(
      x.ndim() == 2 && x.dim(0) == grid_f * grid_h * grid_w && x.dim(1) % (pt * ph * pw) == 0, op,
      "input " + shape_str(x.shape()) + " does not match the token grid");
  const int64_t c = x.dim(1) / (pt * ph * pw);
  const int64_t f = grid_f * pt, h = grid_h * ph, w = grid_w * pw;
  cpu::require(out.shape() == Shape{c, f, h, w}, op,
               "output " + shape_str(out.shape()) + ", expected " + shape_str({c, f, h, w}));
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
