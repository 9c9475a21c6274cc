#include "backend/backend.h"

#include <algorithm>
#include <random>

#include "fisdit/error.h"

namespace fisdit {

namespace {
BackendFactory& cuda_factory() {
  static BackendFactory factory = nullptr;
  return factory;
}
}  // namespace

Tensor Backend::random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                              uint64_t seed) {
  Tensor host = Tensor::zeros(shape);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  float* p = host.f32();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = dist(rng);
  return upload(host, dtype);
}

Tensor Backend::dequantize(const Tensor& stored, float scale, DType dtype) {
  if (!stored.defined() || !is_fp8(stored.dtype()))
    throw Error(name() + " backend: dequantize takes an F8_E4M3 or F8_E5M2 tensor, not " +
                (stored.defined() ? std::string(dtype_name(stored.dtype())) : "an undefined one"));
  if (stored.device() != Device::CPU)
    throw Error(name() + " backend: dequantize of a tensor not on the host");
  if (dtype != DType::F32 && dtype != DType::BF16)
    throw Error(name() + " backend: dequantize gives F32 or BF16, not " +
                std::string(dtype_name(dtype)));
  const auto n = static_cast<size_t>(stored.numel());
  Tensor out = Tensor::zeros(stored.shape(), dtype);
  if (dtype == DType::BF16)
    convert_to_bf16_scaled(stored.dtype(), stored.raw(), scale, out.data_as<uint16_t>(), n);
  else
    convert_to_f32_scaled(stored.dtype(), stored.raw(), scale, out.f32(), n);
  return device() == Device::CPU ? out : upload(out, dtype);
}

namespace {
DeviceCountFn& cuda_count() {
  static DeviceCountFn count = nullptr;
  return count;
}
}  // namespace

void register_cuda_backend(BackendFactory factory, DeviceCountFn count) {
  cuda_factory() = factory;
  cuda_count() = count;
}

std::string default_device() {
  return cuda_factory() && cuda_count() && cuda_count()() > 0 ? "cuda" : "cpu";
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda") {
    if (!cuda_factory())
      throw Error(
          "--device cuda: this fisdit was built without the CUDA backend (nvcc was not "
          "found at configure time); rebuild with the CUDA toolkit or use --device cpu");
    return cuda_factory()();
  }
  throw Error("--device must be cpu or cuda, got '" + device + "'");
}

void check_rel_bias_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& table,
                         const std::vector<int32_t>& bucket_of,
                         const std::vector<uint8_t>& key_valid, const Tensor& out) {
  auto fail = [](const std::string& what) { throw Error("attention_rel_bias: " + what); };
  if (q.ndim() != 3 || k.shape() != q.shape() || v.shape() != q.shape() || out.shape() != q.shape())
    fail("q, k, v and out must be the same [L, heads, head_dim], got " + shape_str(q.shape()) +
         ", " + shape_str(k.shape()) + ", " + shape_str(v.shape()) + ", " + shape_str(out.shape()));
  const int64_t len = q.dim(0), heads = q.dim(1);
  if (table.ndim() != 2 || table.dim(1) != heads || table.dtype() != DType::F32)
    fail("table must be F32 [num_buckets, " + std::to_string(heads) + "], got " +
         shape_str(table.shape()) + " " + std::string(dtype_name(table.dtype())));
  if (static_cast<int64_t>(bucket_of.size()) != std::max<int64_t>(2 * len - 1, 0) ||
      static_cast<int64_t>(key_valid.size()) != len)
    fail("need " + std::to_string(2 * len - 1) + " buckets and " + std::to_string(len) +
         " key flags, got " + std::to_string(bucket_of.size()) + " and " +
         std::to_string(key_valid.size()));
  for (int32_t b : bucket_of)
    if (b < 0 || b >= table.dim(0))
      fail("bucket " + std::to_string(b) + " outside the table's " + std::to_string(table.dim(0)) +
           " rows");
}

}  // namespace fisdit
