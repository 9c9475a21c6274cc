#include "core/quantize.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "fisdit/error.h"

namespace fisdit {

Fp8Rows quantize_rows_e4m3(const Tensor& x) {
  if (!x.defined() || x.ndim() != 2 || x.device() != Device::CPU)
    throw Error("quantize_rows_e4m3: expects a 2-D host tensor, got " +
                (x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor")));
  const Tensor f = x.dtype() == DType::F32 ? x : x.to_f32();
  const int64_t rows = f.dim(0), cols = f.dim(1);
  Fp8Rows q{Tensor::zeros({rows, cols}, DType::F8_E4M3), Tensor::zeros({rows})};
  const float* src = f.f32();
  auto* codes = q.codes.data_as<uint8_t>();
  float* scales = q.scales.f32();
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      finite = finite && std::isfinite(row[c]);
      amax = std::fmax(amax, std::fabs(row[c]));
    }
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    scales[r] = scale;
    for (int64_t c = 0; c < cols; ++c) codes[r * cols + c] = float_to_f8e4m3(row[c] / scale);
  }
  if (!finite)
    throw Error("quantize_rows_e4m3: " + shape_str(x.shape()) +
                " holds a non-finite value, which has no E4M3 code");
  return q;
}

Tensor dequantize_rows(const Fp8Rows& q) {
  const int64_t rows = q.codes.dim(0), cols = q.codes.dim(1);
  Tensor out = Tensor::zeros({rows, cols});
  const auto* codes = q.codes.data_as<uint8_t>();
  const float* scales = q.scales.f32();
  float* dst = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[r * cols + c] = f8e4m3_to_float(codes[r * cols + c]) * scales[r];
  return out;
}

// The whole tensor as one row of quantize_rows_e4m3, widened back.
Tensor round_e4m3_per_tensor(const Tensor& x, float* scale_out) {
  if (!x.defined() || x.device() != Device::CPU)
    throw Error("round_e4m3_per_tensor: expects a host tensor");
  const Fp8Rows q = quantize_rows_e4m3(x.reshape({1, x.numel()}));
  if (scale_out) *scale_out = q.scales.f32()[0];
  return dequantize_rows(q).reshape(x.shape());
}

Tensor column_means(const Tensor& x, int64_t cols) {
  if (!x.defined() || x.device() != Device::CPU || cols <= 0 || x.numel() % cols != 0)
    throw Error("column_means: expects a host tensor of rows of " + std::to_string(cols));
  const Tensor f = x.to_f32();
  const int64_t rows = f.numel() / cols;
  Tensor out = Tensor::zeros({cols});
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < cols; ++c) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += f.f32()[r * cols + c];
    out.f32()[c] = static_cast<float>(sum / static_cast<double>(std::max<int64_t>(rows, 1)));
  }
  return out;
}

Tensor subtract_columns(const Tensor& x, const Tensor& means) {
  const int64_t cols = means.numel();
  if (!x.defined() || x.device() != Device::CPU || cols <= 0 || x.numel() % cols != 0)
    throw Error("subtract_columns: expects a host tensor of rows of " + std::to_string(cols));
  Tensor out = x.to_f32();  // a copy
  float* v = out.f32();
  const float* m = means.f32();
  for (int64_t i = 0; i < out.numel(); ++i) v[i] -= m[i % cols];
  return out;
}

}  // namespace fisdit
