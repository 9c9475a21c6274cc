#include "backend/backend.h"

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

void register_cuda_backend(BackendFactory factory) { cuda_factory() = factory; }

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

}  // namespace fisdit
