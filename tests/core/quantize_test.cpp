// FP8 E4M3 per-row quantization (core/quantize.h) and the CPU backend's linear_fp8, the reference
// of --precision fp8.
#include "core/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

Tensor randn(int64_t rows, int64_t cols, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, stddev);
  Tensor t = Tensor::zeros({rows, cols});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = n(rng);
  return t;
}

TEST(QuantizeE4m3, EachRowsLargestMagnitudeMapsTo448AndTheErrorIsHalfAStep) {
  Tensor x = randn(64, 300, 1);
  for (int64_t c = 0; c < 300; ++c) x.f32()[5 * 300 + c] *= 1e-3f;  // a small row: its own scale
  for (int64_t c = 0; c < 300; ++c) x.f32()[7 * 300 + c] = 0.0f;    // a zero row
  const Fp8Rows q = quantize_rows_e4m3(x);
  ASSERT_EQ(q.codes.dtype(), DType::F8_E4M3);
  ASSERT_EQ(q.codes.shape(), x.shape());
  const Tensor d = dequantize_rows(q);
  for (int64_t r = 0; r < 64; ++r) {
    const float scale = q.scales.f32()[r];
    float amax = 0, qmax = 0;
    for (int64_t c = 0; c < 300; ++c) {
      const float v = x.f32()[r * 300 + c], w = d.f32()[r * 300 + c];
      amax = std::fmax(amax, std::fabs(v));
      qmax = std::fmax(qmax, std::fabs(f8e4m3_to_float(q.codes.data_as<uint8_t>()[r * 300 + c])));
      // 3 mantissa bits: half a step is 2^-4 of the value in the normal range (|v| >= 2^-6
      // scale), and half the subnormal step (2^-9 scale) below it.
      EXPECT_LE(std::fabs(w - v),
                std::fmax(std::ldexp(std::fabs(v), -4), std::ldexp(scale, -10)) * 1.0001f)
          << r << "," << c;
    }
    if (r == 7) {
      EXPECT_EQ(scale, 1.0f);
      EXPECT_EQ(qmax, 0.0f);
    } else {
      EXPECT_FLOAT_EQ(scale, amax / 448.0f) << r;
      EXPECT_EQ(qmax, 448.0f) << r;
    }
  }
  Tensor bad = randn(2, 4, 2);
  bad.f32()[3] = std::nanf("");
  EXPECT_THROW(quantize_rows_e4m3(bad), Error);
  EXPECT_THROW(quantize_rows_e4m3(Tensor::zeros({2, 3, 4})), Error);
}

// linear_fp8 is the fp32 GEMM of the two operands' E4M3 values: equal to a float64 product of
// the dequantized operands up to fp32 summation, and within the format's rounding of the exact
// product. Per operand an E4M3 value is off by at most 2^-4 relative (RMS about 2.6% for
// Gaussian data: the spacing is 2^-3..2^-4 of the value, the error uniform within half of it), so
// a product of two is off by about 3.7% RMS; summed with independent signs the output's relative
// L2 error stays near that: the bound is 0.06.
TEST(LinearFp8, IsTheGemmOfTheE4m3OperandsAndWithinTheFormatOfTheExactOne) {
  auto cpu = make_cpu_backend();
  const int64_t m = 48, k = 256, n = 40;
  const Tensor x = randn(m, k, 3, 2.0f), w = randn(n, k, 4, 0.05f), b = randn(1, n, 5);
  const Fp8Rows wq = quantize_rows_e4m3(w);
  Tensor y = cpu->empty({m, n}), exact = cpu->empty({m, n});
  const Tensor bias = b.reshape({n});
  cpu->linear_fp8(x, wq, &bias, y);
  cpu->linear(x, w, &bias, exact);
  const Tensor xd = dequantize_rows(quantize_rows_e4m3(x)), wd = dequantize_rows(wq);
  double err = 0, ref = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = bias.f32()[j];
      for (int64_t c = 0; c < k; ++c)
        s += static_cast<double>(xd.f32()[i * k + c]) * wd.f32()[j * k + c];
      err += (y.f32()[i * n + j] - s) * (y.f32()[i * n + j] - s);
      ref += s * s;
    }
  EXPECT_LE(std::sqrt(err / ref), 1e-6);
  const double vs_exact = rel_l2(y, exact);
  std::printf("linear_fp8 vs the fp32 linear: rel L2 %.4f\n", vs_exact);
  EXPECT_GT(vs_exact, 1e-3);  // it is quantized
  EXPECT_LE(vs_exact, 0.06);
  // Arguments are checked, naming them.
  Tensor wrong = cpu->empty({m, n + 1});
  EXPECT_THROW(cpu->linear_fp8(x, wq, nullptr, wrong), Error);
  EXPECT_THROW(cpu->linear_fp8(x, Fp8Rows{w, wq.scales}, nullptr, y), Error);  // F32, not codes
  const Fp8Rows odd = quantize_rows_e4m3(randn(n, 24, 6));  // K not a multiple of 16
  EXPECT_THROW(cpu->linear_fp8(randn(m, 24, 7), odd, nullptr, y), Error);
  // quantize_rows on the backend is the host function.
  const Fp8Rows xq = cpu->quantize_rows(x), host = quantize_rows_e4m3(x);
  EXPECT_EQ(0, std::memcmp(xq.codes.raw(), host.codes.raw(), static_cast<size_t>(m * k)));
  EXPECT_EQ(0, std::memcmp(xq.scales.raw(), host.scales.raw(), static_cast<size_t>(m) * 4));
}

// One scale for the whole tensor: the largest magnitude lands on +-448 codes, every value within
// half an E4M3 step of itself (or half the subnormal step, 2^-10 of the scale, for the smallest).
TEST(QuantizeE4m3, PerTensorRoundingHasOneScale) {
  Tensor x = randn(40, 96, 8, 2.0f).reshape({40, 3, 32});
  x.f32()[77] = -25.0f;  // the amax, negative
  float scale = 0;
  const Tensor r = round_e4m3_per_tensor(x, &scale);
  ASSERT_EQ(r.shape(), x.shape());
  EXPECT_FLOAT_EQ(scale, 25.0f / 448.0f);
  EXPECT_FLOAT_EQ(r.f32()[77], -25.0f);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.f32()[i], w = r.f32()[i];
    EXPECT_LE(std::fabs(w - v),
              std::fmax(std::ldexp(std::fabs(v), -4), std::ldexp(scale, -10)) * 1.0001f)
        << i;
    // a representable value: code * scale
    EXPECT_EQ(f8e4m3_to_float(float_to_f8e4m3(w / scale)) * scale, w) << i;
  }
  float zero_scale = 0;
  EXPECT_EQ(round_e4m3_per_tensor(Tensor::zeros({4, 4}), &zero_scale).f32()[3], 0.0f);
  EXPECT_EQ(zero_scale, 1.0f);
  Tensor bad = randn(2, 4, 2);
  bad.f32()[5] = INFINITY;
  EXPECT_THROW(round_e4m3_per_tensor(bad), Error);
}

Tensor randn3(int64_t n, int64_t h, int64_t d, uint32_t seed, float stddev = 1.0f) {
  return randn(n, h * d, seed, stddev).reshape({n, h, d});
}

// x [n, h, d] plus offset * (channel-dependent value) on every token: a mean over the tokens.
Tensor with_channel_offset(Tensor x, float offset) {
  const int64_t cols = x.dim(1) * x.dim(2);
  for (int64_t i = 0; i < x.numel(); ++i)
    x.f32()[i] += offset * std::sin(0.7f * static_cast<float>(i % cols) + 0.3f);
  return x;
}

// attention_fp8 on the CPU is, bit for bit, attention() of q rounded per tensor and k and v less
// their per-channel means over the keys rounded per tensor, plus v's means; and within the
// format of the exact attention: q and k off by up to 2^-4 relative each (RMS ~2.6%) move every
// logit by ~3.7% of its spread, which changes the weights by about that; v's rounding adds its
// own ~2.6%. Measured 4.5% here: bound 0.08. With a large offset per channel in k and v (as
// video DiTs have) the centering keeps that error; rounding k and v as they are would lose it
// to the offset's magnitude.
TEST(AttentionFp8, IsAttentionOfTheRoundedInputsAndWithinTheFormat) {
  auto cpu = make_cpu_backend();
  const int64_t lq = 96, lk = 80, h = 3, d = 32;
  const Tensor q = randn3(lq, h, d, 11), k = randn3(lk, h, d, 12), v = randn3(lk, h, d, 13, 3.0f);
  Tensor got = cpu->empty({lq, h, d}), rounded = cpu->empty({lq, h, d}),
         exact = cpu->empty({lq, h, d});
  cpu->attention_fp8(q, k, v, got);
  const Tensor vmean = column_means(v, h * d);
  cpu->attention(round_e4m3_per_tensor(q),
                 round_e4m3_per_tensor(subtract_columns(k, column_means(k, h * d))),
                 round_e4m3_per_tensor(subtract_columns(v, vmean)), rounded);
  cpu->add_row(rounded, vmean, rounded);
  cpu->attention(q, k, v, exact);
  EXPECT_EQ(0, std::memcmp(got.raw(), rounded.raw(), got.nbytes()));
  const double err = rel_l2(got, exact);
  std::printf("attention_fp8 vs the fp32 attention: rel L2 %.4f\n", err);
  EXPECT_GT(err, 1e-3);
  EXPECT_LE(err, 0.08);

  const Tensor ko = with_channel_offset(k, 20.0f), vo = with_channel_offset(v, 30.0f);
  Tensor offset = cpu->empty({lq, h, d}), offset_exact = cpu->empty({lq, h, d}),
         uncentered = cpu->empty({lq, h, d});
  cpu->attention_fp8(q, ko, vo, offset);
  cpu->attention(q, ko, vo, offset_exact);
  cpu->attention(round_e4m3_per_tensor(q), round_e4m3_per_tensor(ko), round_e4m3_per_tensor(vo),
                 uncentered);
  // The error against the output's variation around v's means, what attention contributes.
  const Tensor vmean_o = column_means(vo, h * d);
  const auto err_of = [&](const Tensor& t) {
    double e = 0, b = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double ref = offset_exact.f32()[i];
      e += (t.f32()[i] - ref) * (t.f32()[i] - ref);
      b += (ref - vmean_o.f32()[i % (h * d)]) * (ref - vmean_o.f32()[i % (h * d)]);
    }
    return std::sqrt(e / b);
  };
  const double centered = err_of(offset), plain = err_of(uncentered);
  std::printf("with channel offsets: rel. error %.4f centered, %.4f as they are\n", centered,
              plain);
  EXPECT_LE(centered, 0.08);
  EXPECT_GT(plain, 2 * centered);
  Tensor odd = cpu->empty({lq, h, 24});  // head_dim not a multiple of 16
  EXPECT_THROW(
      cpu->attention_fp8(randn3(lq, h, 24, 14), randn3(lk, h, 24, 15), randn3(lk, h, 24, 16), odd),
      Error);
  Tensor wrong = cpu->empty({lq, h + 1, d});
  EXPECT_THROW(cpu->attention_fp8(q, k, v, wrong), Error);
}

}  // namespace
}  // namespace fisdit
