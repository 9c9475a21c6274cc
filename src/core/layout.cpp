// Channel-axis moves of host tensors (layout.h): one parallel transpose per leading index.
#include "core/layout.h"

#include <algorithm>

#include "fisdit/error.h"

namespace fisdit {

namespace {
// out[o][i][c] = x[o][c][i] (`to_last`) or out[o][c][i] = x[o][i][c], F32.
Tensor move(const Tensor& x, int axis, bool to_last, const char* what) {
  if (axis < 0 || axis >= x.ndim())
    throw Error(std::string(what) + ": axis " + std::to_string(axis) + " of " +
                shape_str(x.shape()));
  const Tensor src = x.dtype() == DType::F32 ? x : x.to_f32();
  const Shape& s = src.shape();
  Shape out_shape;
  int64_t outer = 1, c = 0, inner = 1;
  if (to_last) {
    for (int i = 0; i < axis; ++i) outer *= s[i];
    c = s[axis];
    for (int i = axis + 1; i < src.ndim(); ++i) inner *= s[i];
    out_shape = s;
    out_shape.erase(out_shape.begin() + axis);
    out_shape.push_back(c);
  } else {
    for (int i = 0; i < axis; ++i) outer *= s[i];
    c = s.back();
    for (int i = axis; i + 1 < src.ndim(); ++i) inner *= s[i];
    out_shape = s;
    out_shape.pop_back();
    out_shape.insert(out_shape.begin() + axis, c);
  }
  Tensor out = Tensor::zeros(out_shape);
  const float* px = src.f32();
  float* po = out.f32();
  constexpr int64_t kBlock = 64;  // tiles of the inner x channel matrix, for the caches
#pragma omp parallel for collapse(2) schedule(static) if (outer * inner * c > (int64_t{1} << 16))
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i0 = 0; i0 < inner; i0 += kBlock) {
      const float* xo = px + o * c * inner;
      float* yo = po + o * c * inner;
      const int64_t i1 = std::min(inner, i0 + kBlock);
      for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
        const int64_t c1 = std::min(c, c0 + kBlock);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t ch = c0; ch < c1; ++ch) {
            if (to_last)
              yo[i * c + ch] = xo[ch * inner + i];
            else
              yo[ch * inner + i] = xo[i * c + ch];
          }
      }
    }
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
