// The CPU backend's elementwise ops (fp32): gated residual adds with a per-token modulation row,
// scaled adds, differences, row broadcasts and the LoRA merge w += scale * up @ down.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_add(Tensor& x, const Tensor& y, ModChunk gate) {
  const int64_t d = x.ndim() ? x.dim(-1) : 1, rows = d ? x.numel() / d : 0;
  cpu::check_mod_rows(gate, rows, "add");
  float* px = x.f32();
  const float* py = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = cpu::mod_row(gate, r);
    for (int64_t i = 0; i < d; ++i) px[r * d + i] += g ? py[r * d + i] * g[i] : py[r * d + i];
  }
}

void CpuBackend::do_mul_gate(Tensor& x, ModChunk gate) {
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  cpu::check_mod_rows(gate, rows, "mul_gate");
  float* px = x.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = cpu::mod_row(gate, r);
    for (int64_t i = 0; i < d; ++i) px[r * d + i] *= g[i];
  }
}

void CpuBackend::do_add_scaled(Tensor& x, const Tensor& y, float alpha) {
  float* px = x.f32();
  const float* py = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) px[i] += alpha * py[i];
}

void CpuBackend::do_add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) {
  for (const Tensor* t : {static_cast<const Tensor*>(&w), &up, &down})
    cpu::require(t->device() == Device::CPU, "add_low_rank", "expects host tensors");
  const int64_t rows = up.dim(0), rank = up.dim(1), cols = down.dim(1);
  float* pw = w.f32();
  const float* pu = up.f32();
  const float* pd = down.f32();
  // Each row of the product accumulated in fp32 over the rank, then scaled and added.
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < rows; ++o) {
      std::fill(row.begin(), row.end(), 0.0f);
      for (int64_t k = 0; k < rank; ++k) {
        const float c = pu[o * rank + k];
        const float* d = pd + k * cols;
        for (int64_t i = 0; i < cols; ++i) row[static_cast<size_t>(i)] += c * d[i];
      }
      float* wo = pw + o * cols;
      for (int64_t i = 0; i < cols; ++i) wo[i] += scale * row[static_cast<size_t>(i)];
    }
  }
}

void CpuBackend::do_sub(const Tensor& a, const Tensor& b, Tensor& out) {
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* po = out.f32();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] - pb[i];
}

void CpuBackend::do_add_row(const Tensor& a, const Tensor& row, Tensor& out) {
  const int64_t d = row.numel();
  const float* pa = a.f32();
  const float* pr = row.f32();
  float* po = out.f32();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pr[i % d];
}

}  // namespace fisdit
