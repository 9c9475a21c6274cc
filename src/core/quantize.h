#pragma once
// FP8 E4M3 with one scale per row (weights per output channel, activations per token): the
// numerics --precision fp8 computes with, on the host, as the reference of the GPU path.
#include "core/tensor.h"

namespace fisdit {

// Row r of a 2-D tensor as E4M3 codes with one fp32 scale: scale[r] = amax(|x[r, :]|) / 448
// (1 for a row of zeros), codes[r, c] = e4m3(x[r, c] / scale[r]) rounded to nearest even, so the
// largest magnitude of each row maps to 448, E4M3's largest finite value.
struct Fp8Rows {
  Tensor codes;   // F8_E4M3 [rows, cols]
  Tensor scales;  // F32 [rows]
};
// `x`: a 2-D host tensor of any float dtype. Throws naming the shape when it is not 2-D, and on a
// non-finite value (which has no E4M3 code).
Fp8Rows quantize_rows_e4m3(const Tensor& x);
// codes[r, c] * scale[r] as a host F32 tensor.
Tensor dequantize_rows(const Fp8Rows& q);
// A whole tensor of any shape as E4M3 with ONE scale (the attention inputs of --precision fp8):
// quantize_rows_e4m3 of x as one row (scale = amax(|x|) / 448, 1 for all zeros), widened back
// (code * scale, one F32 rounding) as a host F32 tensor of x's shape; `scale` receives the
// scale. Throws on a non-finite value.
Tensor round_e4m3_per_tensor(const Tensor& x, float* scale = nullptr);
// x viewed as [numel / cols, cols] (a host tensor): the mean of each column over the rows (summed
// in double), as F32 [cols]; and x less those means (F32, x's shape).
Tensor column_means(const Tensor& x, int64_t cols);
Tensor subtract_columns(const Tensor& x, const Tensor& means);

}  // namespace fisdit
