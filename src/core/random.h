#pragma once
// Seeded Gaussian noise that is the same on every machine and standard library: a counter-based
// generator (Philox-4x32-10) and the Box-Muller transform, so element i of a draw depends only on
// (seed, i). std::normal_distribution is implementation-defined and would tie seeds to libstdc++.
#include <cstdint>

#include "core/tensor.h"

namespace fisdit {

// The Philox-4x32-10 block of a 128-bit counter under a 64-bit key (Salmon et al. 2011).
void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

// Host F32 tensor of `shape` with N(0, 1) entries; element i uses counter i / 2 of the stream.
Tensor randn(const Shape& shape, uint64_t seed);

}  // namespace fisdit
