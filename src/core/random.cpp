#include "core/random.h"

#include <cmath>
#include <numbers>

namespace fisdit {

void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kMul0} * c0, p1 = uint64_t{kMul1} * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kWeyl0, k1 += kWeyl1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

Tensor randn(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::zeros(shape);
  float* p = t.f32();
  const int64_t n = t.numel();
  // Each Philox block gives two pairs of uniforms -> four normals (two Box-Muller pairs).
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < (n + 3) / 4; ++block) {
    const uint32_t counter[4] = {static_cast<uint32_t>(block),
                                 static_cast<uint32_t>(static_cast<uint64_t>(block) >> 32), 0, 0};
    const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
    uint32_t r[4];
    philox4x32(counter, key, r);
    for (int pair = 0; pair < 2; ++pair) {
      // u1 in (0, 1] (never 0: log is finite), u2 in [0, 1); 32 random bits each, in double.
      const double u1 = (static_cast<double>(r[2 * pair]) + 1.0) / 4294967296.0;
      const double u2 = static_cast<double>(r[2 * pair + 1]) / 4294967296.0;
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double angle = 2.0 * std::numbers::pi * u2;
      const int64_t i = block * 4 + pair * 2;
      if (i < n) p[i] = static_cast<float>(radius * std::cos(angle));
      if (i + 1 < n) p[i + 1] = static_cast<float>(radius * std::sin(angle));
    }
  }
  return t;
}

}  // namespace fisdit
