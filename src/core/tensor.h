#pragma once
// Tensor: a dtype, a shape and a pointer into storage that something owns (a heap buffer, an
// mmap'ed checkpoint, device memory). Copies share storage; views keep their owner alive.
// Contiguous row-major only: strided views are not needed by the models.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fisdit {

using Shape = std::vector<int64_t>;
enum class Device : uint8_t { CPU, CUDA };

std::string shape_str(const Shape& s);  // "[16, 9, 8, 8]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // A new zero-initialised host tensor.
  static Tensor zeros(Shape shape, DType dtype = DType::F32);
  // A view of memory owned by `owner` (kept alive as long as the tensor or a view lives).
  static Tensor view_of(std::shared_ptr<const void> owner, void* data, Shape shape, DType dtype,
                        Device device = Device::CPU);
  static Tensor from_vector(const std::vector<float>& values, Shape shape);

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  // Typed access to host F32 data; throws if the tensor is not a host F32 tensor.
  float* f32();
  const float* f32() const;
  template <class T>
  T* data_as() {
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* data_as() const {
    return static_cast<const T*>(data_);
  }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A host F32 copy (converting from any float or integer dtype).
  Tensor to_f32() const;
  Tensor clone() const;
  std::vector<float> to_vector() const;  // host F32 values

  const std::shared_ptr<const void>& owner() const { return owner_; }

 private:
  std::shared_ptr<const void> owner_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

// Relative L2 error ||a - b|| / ||b|| computed in double (the project's tolerance measure).
double rel_l2(const Tensor& a, const Tensor& b);

}  // namespace fisdit
