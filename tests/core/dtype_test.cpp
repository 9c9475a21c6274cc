// float -> fp8 E4M3 quantisation (what scaled fp8 checkpoints store), against the decoder.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "fisdit/error.h"

namespace fisdit {
namespace {

TEST(Fp8E4M3, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<uint8_t>(c);
    const float v = f8e4m3_to_float(code);
    if (std::isnan(v)) continue;  // 0x7f, 0xff
    if (v == 0.0f) {
      EXPECT_EQ(float_to_f8e4m3(v), code) << c;  // signed zeros keep their sign
      continue;
    }
    EXPECT_EQ(float_to_f8e4m3(v), code) << c << " = " << v;
  }
}

TEST(Fp8E4M3, RoundsToNearestEvenAndSaturatesAsTorch) {
  // Values checked against torch 2.15 (.to(torch.float8_e4m3fn).view(torch.uint8)).
  EXPECT_EQ(float_to_f8e4m3(1.0625f), 0x38);  // halfway between 1 and 1.125: even (1)
  EXPECT_EQ(float_to_f8e4m3(1.1875f), 0x3a);  // halfway between 1.125 and 1.25: even (1.25)
  EXPECT_EQ(float_to_f8e4m3(1.07f), 0x39);
  EXPECT_EQ(float_to_f8e4m3(0x1p-10f), 0x00);       // halfway to the smallest subnormal: even
  EXPECT_EQ(float_to_f8e4m3(3 * 0x1p-9f), 0x03);    // a subnormal
  EXPECT_EQ(float_to_f8e4m3(0.0146484375f), 0x08);  // 15/8 * 2^-7 rounds up into 2^-6
  EXPECT_EQ(float_to_f8e4m3(448.0f), 0x7e);
  EXPECT_EQ(float_to_f8e4m3(463.9f), 0x7e);
  EXPECT_EQ(float_to_f8e4m3(1e30f), 0x7e);  // saturates
  EXPECT_EQ(float_to_f8e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(float_to_f8e4m3(std::nanf("")))));
}

// Large buffers are converted in parallel chunks: every element equals the scalar conversion
// (chunk edges included), and an unconvertible dtype still throws (outside the threads).
TEST(ConvertToF32, LargeBuffersEqualTheScalarConversion) {
  const size_t n = (size_t{5} << 20) + 12345;  // 5 chunks and a partial one
  std::vector<uint8_t> f8(n);
  std::vector<uint16_t> bf(n);
  for (size_t i = 0; i < n; ++i) {
    f8[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    bf[i] = static_cast<uint16_t>((i * 2654435761u) >> 7);
  }
  std::vector<float> out(n);
  convert_to_f32(DType::F8_E4M3, f8.data(), out.data(), n);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float want = f8e4m3_to_float(f8[i]);
    bad += !(out[i] == want || (std::isnan(out[i]) && std::isnan(want)));
  }
  EXPECT_EQ(bad, 0u);
  convert_to_f32(DType::BF16, bf.data(), out.data(), n);
  bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float want = bf16_to_float(bf[i]);
    bad += !(out[i] == want || (std::isnan(out[i]) && std::isnan(want)));
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_THROW(convert_to_f32(DType::Bool, f8.data(), out.data(), n), Error);
}

}  // namespace
}  // namespace fisdit
