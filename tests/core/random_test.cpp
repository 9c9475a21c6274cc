// Seeded noise: Philox known answers, determinism by seed, and the moments of N(0, 1).
#include "core/random.h"

#include <gtest/gtest.h>

#include <cmath>

namespace fisdit {
namespace {

// Known-answer vectors of Philox-4x32-10 published with the Random123 library (kat_vectors).
TEST(Philox, KnownAnswers) {
  struct Case {
    uint32_t ctr[4], key[2], out[4];
  };
  const Case cases[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Case& c : cases) {
    uint32_t out[4];
    philox4x32(c.ctr, c.key, out);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], c.out[i]) << "word " << i;
  }
}

TEST(Randn, SameSeedSameNoiseOtherSeedOtherNoise) {
  const Tensor a = randn({3, 5, 7}, 42), b = randn({3, 5, 7}, 42), c = randn({3, 5, 7}, 43);
  int same = 0, differ = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    same += a.f32()[i] == b.f32()[i];
    differ += a.f32()[i] != c.f32()[i];
  }
  EXPECT_EQ(same, a.numel());
  EXPECT_EQ(differ, a.numel());
}

// Element i depends on (seed, i) only: a longer draw starts with the shorter one.
TEST(Randn, PrefixStable) {
  const Tensor a = randn({10}, 7), b = randn({2, 9}, 7);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]) << i;
}

TEST(Randn, StandardNormalMoments) {
  const Tensor t = randn({1 << 18}, 2026);
  double sum = 0, sq = 0, quart = 0;
  int64_t beyond3 = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.f32()[i];
    ASSERT_TRUE(std::isfinite(v));
    sum += v, sq += v * v, quart += v * v * v * v;
    beyond3 += std::abs(v) > 3;
  }
  const double n = static_cast<double>(t.numel());
  // Standard errors at n = 262144: mean 0.002, variance 0.003, 4th moment 0.02.
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.015);
  EXPECT_NEAR(quart / n, 3.0, 0.1);
  // P(|z| > 3) = 0.0027.
  EXPECT_NEAR(static_cast<double>(beyond3) / n, 0.0027, 0.0005);
}

}  // namespace
}  // namespace fisdit
