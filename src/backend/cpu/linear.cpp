// The CPU backend's linear op and activations: a blocked fp32 GEMM (4 rows x 64 columns per task,
// 8 partial sums per dot product so it vectorises without -ffast-math), the reference of the
// CUDA GEMMs.
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/quantize.h"

namespace fisdit {

namespace cpu {
float apply_activation(float v, Activation act) {
  switch (act) {
    case Activation::None:
      return v;
    case Activation::Silu:
      return v / (1.0f + std::exp(-v));
    case Activation::GeluTanh: {
      // nn.GELU(approximate='tanh')
      const float c = 0.7978845608028654f;  // sqrt(2/pi)
      return 0.5f * v * (1.0f + std::tanh(c * (v + 0.044715f * v * v * v)));
    }
    case Activation::Gelu:  // nn.GELU(): 0.5 v (1 + erf(v / sqrt(2)))
      return static_cast<float>(0.5 * v * (1.0 + std::erf(v * 0.7071067811865476)));
  }
  return v;
}
}  // namespace cpu

namespace {
constexpr int kLanes = 8;

// Four rows of x against one row of w, 8 independent partial sums per row so the compiler
// vectorises without reassociating (no -ffast-math).
inline void dot4(const float* x0, const float* x1, const float* x2, const float* x3, const float* w,
                 int64_t k, float out[4]) {
  float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float wv = w[i + l];
      a0[l] += x0[i + l] * wv;
      a1[l] += x1[i + l] * wv;
      a2[l] += x2[i + l] * wv;
      a3[l] += x3[i + l] * wv;
    }
  }
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int l = 0; l < kLanes; ++l) {
    s0 += a0[l];
    s1 += a1[l];
    s2 += a2[l];
    s3 += a3[l];
  }
  for (; i < k; ++i) {
    s0 += x0[i] * w[i];
    s1 += x1[i] * w[i];
    s2 += x2[i] * w[i];
    s3 += x3[i] * w[i];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}
}  // namespace

void CpuBackend::do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                           Activation act) {
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  const float* px = x.f32();
  const float* pw = w.f32();
  const float* pb = bias ? bias->f32() : nullptr;
  float* py = y.f32();
  constexpr int64_t kRowBlock = 4, kColBlock = 64;
  const int64_t row_blocks = (m + kRowBlock - 1) / kRowBlock;
  const int64_t col_blocks = (n + kColBlock - 1) / kColBlock;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const int64_t r0 = rb * kRowBlock;
      const float* rows[4];
      for (int64_t r = 0; r < kRowBlock; ++r)
        rows[r] = px + std::min(r0 + r, m - 1) * k;  // clamp: extra rows are computed, not stored
      const int64_t c_end = std::min(n, (cb + 1) * kColBlock);
      for (int64_t c = cb * kColBlock; c < c_end; ++c) {
        float out[4];
        dot4(rows[0], rows[1], rows[2], rows[3], pw + c * k, k, out);
        for (int64_t r = 0; r < kRowBlock && r0 + r < m; ++r) {
          const float v = out[r] + (pb ? pb[c] : 0.0f);
          py[(r0 + r) * n + c] = cpu::apply_activation(v, act);
        }
      }
    }
  }
  flops_.linear += 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

// Both operands as the E4M3 values they are (code * scale, exact in fp32 up to the scale's
// rounding), then the fp32 GEMM: a product of two E4M3 values is exact in fp32, so this differs
// from a GPU's fp8 GEMM by the order of the fp32 sums only.
Fp8Rows CpuBackend::do_quantize_rows(const Tensor& x) {
  Fp8Rows q = quantize_rows_e4m3(x);
  return {tracked(q.codes, "quantize_rows"), tracked(q.scales, "quantize_rows")};
}

void CpuBackend::do_linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                               Activation act) {
  do_linear(dequantize_rows(x), dequantize_rows(w), bias, y, act);  // counts the FLOPs
}

void CpuBackend::do_activation(const Tensor& x, Tensor& y, Activation act) {
  const float* px = x.f32();
  float* py = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) py[i] = cpu::apply_activation(px[i], act);
}

}  // namespace fisdit
