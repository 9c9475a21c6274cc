// The CPU backend's LayerNorm (+ adaLN modulation) and RMSNorm, statistics in double: the
// reference of the CUDA norm kernels.
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                               Tensor& y, ModChunk shift, ModChunk scale) {
  const int64_t rows = x.dim(0), d = x.dim(1);
  cpu::check_mod_rows(shift, rows, "layer_norm");
  cpu::check_mod_rows(scale, rows, "layer_norm");
  const float* px = x.f32();
  float* py = y.f32();
  const float* pw = weight ? weight->f32() : nullptr;
  const float* pb = bias ? bias->f32() : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * d;
    double mean = 0;
    for (int64_t i = 0; i < d; ++i) mean += xr[i];
    mean /= static_cast<double>(d);
    double var = 0;
    for (int64_t i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(d);  // biased, as nn.LayerNorm
    const double inv = 1.0 / std::sqrt(var + eps);
    const float* sh = cpu::mod_row(shift, r);
    const float* sc = cpu::mod_row(scale, r);
    float* yr = py + r * d;
    for (int64_t i = 0; i < d; ++i) {
      float v = static_cast<float>((xr[i] - mean) * inv);
      if (pw) v *= pw[i];
      if (pb) v += pb[i];
      if (sc) v = v * (1.0f + sc[i]) + sh[i];
      yr[i] = v;
    }
  }
}

void CpuBackend::do_rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const int64_t rows = x.dim(0), d = x.dim(1);
  const float* px = x.f32();
  const float* pw = weight.f32();
  float* py = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    float* yr = py + r * d;
    for (int64_t i = 0; i < d; ++i) yr[i] = static_cast<float>(xr[i] * inv) * pw[i];
  }
}

}  // namespace fisdit
