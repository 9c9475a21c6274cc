#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

namespace {
void require_same(const Tensor& a, const Tensor& b, const char* op) {
  cpu::require(a.shape() == b.shape(), op,
               "shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
}
}  // namespace

void CpuBackend::add(Tensor& x, const Tensor& y, ModChunk gate) {
  require_same(x, y, "add");
  const int64_t d = x.ndim() ? x.dim(-1) : 1, rows = d ? x.numel() / d : 0;
  cpu::check_mod(gate, rows, d, "add");
  float* px = x.f32();
  const float* py = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = cpu::mod_row(gate, r);
    for (int64_t i = 0; i < d; ++i) px[r * d + i] += g ? py[r * d + i] * g[i] : py[r * d + i];
  }
}

void CpuBackend::mul_gate(Tensor& x, ModChunk gate) {
  cpu::require(gate.mod != nullptr, "mul_gate", "no gate given");
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  cpu::check_mod(gate, rows, d, "mul_gate");
  float* px = x.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = cpu::mod_row(gate, r);
    for (int64_t i = 0; i < d; ++i) px[r * d + i] *= g[i];
  }
}

void CpuBackend::add_scaled(Tensor& x, const Tensor& y, float alpha) {
  require_same(x, y, "add_scaled");
  float* px = x.f32();
  const float* py = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) px[i] += alpha * py[i];
}

void CpuBackend::add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) {
  const char* op = "add_low_rank";
  for (const Tensor* t : {static_cast<const Tensor*>(&w), &up, &down})
    cpu::require(t->dtype() == DType::F32 && t->device() == Device::CPU, op,
                 "expects host F32 tensors");
  cpu::require(up.ndim() == 2 && down.ndim() == 2 && w.ndim() >= 1 && up.dim(1) == down.dim(0) &&
                   w.dim(0) == up.dim(0) && w.numel() == up.dim(0) * down.dim(1),
               op,
               "w " + shape_str(w.shape()) + " is not up " + shape_str(up.shape()) + " @ down " +
                   shape_str(down.shape()));
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

void CpuBackend::sub(const Tensor& a, const Tensor& b, Tensor& out) {
  require_same(a, b, "sub");
  require_same(a, out, "sub");
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* po = out.f32();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] - pb[i];
}

void CpuBackend::add_row(const Tensor& a, const Tensor& row, Tensor& out) {
  require_same(a, out, "add_row");
  const int64_t d = row.numel();
  cpu::require(d > 0 && a.numel() % d == 0, "add_row",
               "row of " + std::to_string(d) + " does not tile " + shape_str(a.shape()));
  const float* pa = a.f32();
  const float* pr = row.f32();
  float* po = out.f32();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pr[i % d];
}

}  // namespace fisdit
