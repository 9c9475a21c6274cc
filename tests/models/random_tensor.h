#pragma once
// A host fp32 tensor of N(0, scale^2) values from `seed` (std::mt19937), for the models tests'
// weights and LoRA factors.
#include <cstdint>
#include <random>

#include "core/tensor.h"

namespace fisdit::modeltest {

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensor t = Tensor::zeros(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

}  // namespace fisdit::modeltest
