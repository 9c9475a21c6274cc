#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fisdit/error.h"

namespace fisdit {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  // 64-byte aligned so vector loads never straddle; calloc-like zero fill.
  const size_t padded = ((bytes + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) {
    char size[64];
    if (bytes >= (size_t{1} << 30))
      std::snprintf(size, sizeof size, "%.1f GiB", static_cast<double>(bytes) / 1073741824.0);
    else
      std::snprintf(size, sizeof size, "%zu bytes", bytes);
    throw Error("out of host memory allocating " + std::string(size) + " for a " +
                shape_str(shape) + " " + std::string(dtype_name(dtype)) + " tensor");
  }
  // Large buffers are zeroed (and first touched) by all threads: a 14B-parameter checkpoint is
  // widened through host tensors of up to ~280 MB each.
  constexpr size_t kBlock = size_t{1} << 20;
  if (padded >= 32 * kBlock) {
    const auto blocks = static_cast<int64_t>((padded + kBlock - 1) / kBlock);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const size_t off = static_cast<size_t>(b) * kBlock;
      std::memset(static_cast<char*>(p) + off, 0, std::min(kBlock, padded - off));
    }
  } else {
    std::memset(p, 0, padded);
  }
  Tensor t;
  t.owner_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::view_of(std::shared_ptr<const void> owner, void* data, Shape shape, DType dtype,
                       Device device) {
  Tensor t;
  t.owner_ = std::move(owner);
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw Error("from_vector: " + std::to_string(values.size()) + " values do not fill shape " +
                shape_str(shape));
  Tensor t = zeros(std::move(shape));
  std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  if (j < 0 || j >= n)
    throw Error("dimension " + std::to_string(i) + " out of range for shape " + shape_str(shape_));
  return shape_[j];
}

float* Tensor::f32() {
  if (dtype_ != DType::F32 || device_ != Device::CPU)
    throw Error("expected a host F32 tensor, got " + std::string(dtype_name(dtype_)) +
                (device_ == Device::CPU ? " on the CPU" : " on CUDA"));
  return static_cast<float*>(data_);
}

const float* Tensor::f32() const { return const_cast<Tensor*>(this)->f32(); }

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    throw Error("cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  if (shape_.empty() || begin < 0 || end < begin || end > shape_[0])
    throw Error("row slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") out of range for shape " + shape_str(shape_));
  Tensor t = *this;
  const size_t row_bytes = shape_[0] ? nbytes() / static_cast<size_t>(shape_[0]) : 0;
  t.data_ = static_cast<char*>(data_) + row_bytes * static_cast<size_t>(begin);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::to_f32() const {
  if (device_ != Device::CPU) throw Error("to_f32: tensor is not on the host");
  Tensor t = zeros(shape_);
  convert_to_f32(dtype_, data_, static_cast<float*>(t.data_), static_cast<size_t>(numel()));
  return t;
}

Tensor Tensor::clone() const {
  if (device_ != Device::CPU) throw Error("clone: tensor is not on the host");
  Tensor t = zeros(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

std::vector<float> Tensor::to_vector() const {
  const Tensor f = dtype_ == DType::F32 ? *this : to_f32();
  const float* p = f.f32();
  return std::vector<float>(p, p + f.numel());
}

double rel_l2(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw Error("rel_l2: shapes differ, " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
  const Tensor fa = a.dtype() == DType::F32 ? a : a.to_f32();
  const Tensor fb = b.dtype() == DType::F32 ? b : b.to_f32();
  const float* pa = fa.f32();
  const float* pb = fb.f32();
  double num = 0, den = 0;
  for (int64_t i = 0; i < fa.numel(); ++i) {
    const double d = static_cast<double>(pa[i]) - pb[i];
    num += d * d;
    den += static_cast<double>(pb[i]) * pb[i];
  }
  if (den == 0) return num == 0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

}  // namespace fisdit
