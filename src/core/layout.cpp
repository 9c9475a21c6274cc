// Channel-axis moves of host tensors (layout.h): one parallel transpose per leading index.
#include "core/layout.h"

#include <algorithm>

#include "fisdit/error.h"

namespace fisdit {

void transpose_batched(const float* in, float* out, int64_t batch, int64_t rows, int64_t cols) {
  constexpr int64_t kBlock = 64;  // tiles of each rows x cols matrix, for the caches
#pragma omp parallel for collapse(2) schedule(static) if (batch * rows * cols > (int64_t{1} << 16))
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
      const float* x = in + b * rows * cols;
      float* y = out + b * rows * cols;
      const int64_t r1 = std::min(rows, r0 + kBlock);
      for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
        const int64_t c1 = std::min(cols, c0 + kBlock);
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) y[c * rows + r] = x[r * cols + c];
      }
    }
}

namespace {
// x [outer, C, inner] -> [outer, inner, C] (`to_last`) or x [outer, inner, C] -> [outer, C,
// inner], as F32.
Tensor move(const Tensor& x, int axis, bool to_last, const char* what) {
  if (axis < 0 || axis >= x.ndim())
    throw Error(std::string(what) + ": axis " + std::to_string(axis) + " of " +
                shape_str(x.shape()));
  const Tensor src = x.dtype() == DType::F32 ? x : x.to_f32();
  const Shape& s = src.shape();
  Shape out_shape = s;
  int64_t outer = 1, c = 0, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= s[i];
  if (to_last) {
    c = s[axis];
    for (int i = axis + 1; i < src.ndim(); ++i) inner *= s[i];
    out_shape.erase(out_shape.begin() + axis);
    out_shape.push_back(c);
  } else {
    c = s.back();
    for (int i = axis; i + 1 < src.ndim(); ++i) inner *= s[i];
    out_shape.pop_back();
    out_shape.insert(out_shape.begin() + axis, c);
  }
  Tensor out = Tensor::zeros(out_shape);
  if (to_last)
    transpose_batched(src.f32(), out.f32(), outer, c, inner);
  else
    transpose_batched(src.f32(), out.f32(), outer, inner, c);
  return out;
}
}  // namespace

Tensor channels_to_last(const Tensor& x, int axis) {
  return move(x, axis, true, "channels_to_last");
}

Tensor channels_from_last(const Tensor& x, int axis) {
  return move(x, axis, false, "channels_from_last");
}

}  // namespace fisdit
