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

// Scaled fp8 straight to bf16: the value widening, scaling in fp32 and narrowing give, for every
// code and across chunk edges; other float inputs too; a bad dtype throws.
TEST(ConvertToBf16Scaled, EqualsWidenScaleNarrow) {
  const size_t n = (size_t{3} << 16) * 7 + 321;
  std::vector<uint8_t> f8(n);
  for (size_t i = 0; i < n; ++i) f8[i] = static_cast<uint8_t>((i * 2654435761u) >> 11);
  std::vector<uint16_t> out(n);
  for (float scale : {1.0f, 0.00123f, 37.5f}) {
    convert_to_bf16_scaled(DType::F8_E4M3, f8.data(), scale, out.data(), n);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint16_t want = float_to_bf16(f8e4m3_to_float(f8[i]) * scale);
      const bool nan = std::isnan(bf16_to_float(want)) && std::isnan(bf16_to_float(out[i]));
      bad += !(out[i] == want || nan);
    }
    EXPECT_EQ(bad, 0u) << scale;
  }
  const std::vector<float> f32 = {1.0f, -2.5f, 3.14159f, 1e-3f};
  std::vector<uint16_t> b(4);
  convert_to_bf16_scaled(DType::F32, f32.data(), 0.5f, b.data(), 4);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i], float_to_bf16(f32[i] * 0.5f)) << i;
  EXPECT_THROW(convert_to_bf16_scaled(DType::Bool, f8.data(), 1.0f, out.data(), n), Error);
}

// The fp32 twin: widening then one fp32 multiply, across the parallel threshold.
TEST(ConvertToF32Scaled, EqualsWidenThenScale) {
  const size_t n = (size_t{1} << 21) + 13;
  std::vector<uint8_t> f8(n);
  for (size_t i = 0; i < n; ++i) f8[i] = static_cast<uint8_t>((i * 2654435761u) >> 11);
  std::vector<float> out(n);
  for (float scale : {1.0f, 0.00123f, -37.5f}) {
    convert_to_f32_scaled(DType::F8_E4M3, f8.data(), scale, out.data(), n);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const float want = f8e4m3_to_float(f8[i]) * scale;
      bad += !(out[i] == want || (std::isnan(out[i]) && std::isnan(want)));
    }
    EXPECT_EQ(bad, 0u) << scale;
  }
  EXPECT_THROW(convert_to_f32_scaled(DType::Bool, f8.data(), 2.0f, out.data(), n), Error);
}

}  // namespace
}  // namespace fisdit
