#pragma once
// Shared helpers of the GPU tests: the CUDA backend (tests skip when no GPU is usable), random
// host inputs, bf16 rounding so CPU and GPU see the same operand values, poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "../env_scope.h"
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "fisdit/error.h"

namespace fisdit::test {

inline Backend* gpu_or_null() {
  static std::unique_ptr<Backend> backend = []() -> std::unique_ptr<Backend> {
    try {
      return make_cuda_backend();
    } catch (const Error& e) {
      std::fprintf(stderr, "no CUDA backend: %s\n", e.what());
      return nullptr;
    }
  }();
  return backend.get();
}

#define FISDIT_REQUIRE_GPU()                          \
  Backend* gpu_ptr = ::fisdit::test::gpu_or_null();   \
  if (!gpu_ptr) GTEST_SKIP() << "no usable CUDA GPU"; \
  Backend& gpu = *gpu_ptr

inline Tensor randn(const Shape& shape, uint64_t seed, float stddev = 1.0f, float mean = 0.0f) {
  Tensor t = Tensor::zeros(shape);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// The values a BF16 device tensor holds for this host tensor.
inline Tensor round_bf16(const Tensor& t) {
  Tensor r = t.clone();
  float* p = r.f32();
  for (int64_t i = 0; i < r.numel(); ++i) p[i] = bf16_to_float(float_to_bf16(p[i]));
  return r;
}

// Sets FISDIT_FP8_ATTENTION for a scope (the CUDA backend reads it at each call). Unset, each
// call shape runs the faster of the bf16 attention and cuDNN's fp8 (measured on its first call),
// so a test of the fp8 attention names the kernel.
class Fp8AttentionKernelScope : public EnvScope {
 public:
  explicit Fp8AttentionKernelScope(const char* kernel) : EnvScope("FISDIT_FP8_ATTENTION", kernel) {}
};

// A device tensor full of NaN: any element an op fails to write shows in the error.
inline Tensor poisoned(Backend& gpu, const Shape& shape, DType dtype) {
  Tensor host = Tensor::zeros(shape);
  float* p = host.f32();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
  return gpu.upload(host, dtype);
}

inline double gpu_err(Backend& gpu, const Tensor& device, const Tensor& reference) {
  const Tensor got = gpu.download(device);
  return rel_l2(got.reshape(reference.shape()), reference);
}

}  // namespace fisdit::test
