// PSNR and SSIM against their definitions and closed forms.
#include "analysis/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {

Tensor random_video(int64_t f, int64_t h, int64_t w, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Tensor t = Tensor::zeros({3, f, h, w});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = u(rng);
  return t;
}

Tensor filled(int64_t f, int64_t h, int64_t w, float v) {
  Tensor t = Tensor::zeros({3, f, h, w});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = v;
  return t;
}

TEST(Metrics, PsnrClosedForm) {
  const Tensor a = random_video(2, 9, 7, 1);
  EXPECT_TRUE(std::isinf(psnr(a, a)));
  Tensor b = a.clone();
  for (int64_t i = 0; i < b.numel(); ++i) b.f32()[i] += 0.1f;  // 0.05 on the [0, 1] scale
  EXPECT_NEAR(psnr(b, a), 10.0 * std::log10(1.0 / 0.0025), 1e-4);
}

TEST(Metrics, FrameMseIsPerFrameAndAveragesToThePsnrMse) {
  const Tensor a = random_video(3, 6, 5, 2);
  Tensor b = a.clone();
  // Frame 0 untouched, frame 1 offset by 0.2 (0.1 on the [0, 1] scale) in every channel, frame 2
  // by 0.4 in the green channel only (0.2 on a third of its values).
  const int64_t plane = 6 * 5;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      b.f32()[(c * 3 + 1) * plane + i] += 0.2f;
      if (c == 1) b.f32()[(c * 3 + 2) * plane + i] += 0.4f;
    }
  const std::vector<double> mse = frame_mse(b, a);
  ASSERT_EQ(mse.size(), 3u);
  EXPECT_EQ(mse[0], 0.0);
  EXPECT_NEAR(mse[1], 0.01, 1e-7);
  EXPECT_NEAR(mse[2], 0.04 / 3, 1e-7);
  // Equal frame sizes: the video's MSE is the mean of the frames'.
  const double mean = (mse[0] + mse[1] + mse[2]) / 3;
  EXPECT_NEAR(psnr(b, a), 10.0 * std::log10(1.0 / mean), 1e-9);
  EXPECT_THROW(frame_mse(a, random_video(2, 6, 5, 2)), Error);
}

TEST(Metrics, SsimOfConstantFramesIsTheLuminanceTerm) {
  // No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with a, b on the [0, 1] scale.
  const double b = (static_cast<double>(0.2f) + 1.0) / 2.0;  // 0.2f is not exactly 0.2
  const double expect = (2 * 0.5 * b + 1e-4) / (0.25 + b * b + 1e-4);
  EXPECT_NEAR(ssim(filled(1, 16, 16, 0.0f), filled(1, 16, 16, 0.2f)), expect, 1e-12);
  EXPECT_NEAR(ssim(filled(1, 5, 4, 0.0f), filled(1, 5, 4, 0.2f)), expect, 1e-12);  // < window
}

// The definition, evaluated directly with a 2-D Gaussian window at every valid position.
double ssim_direct(const Tensor& a, const Tensor& b) {
  const int64_t planes = a.dim(0) * a.dim(1), h = a.dim(2), w = a.dim(3);
  double g[11], gs = 0;
  for (int i = 0; i < 11; ++i) gs += g[i] = std::exp(-(i - 5.0) * (i - 5.0) / 4.5);
  double total = 0;
  for (int64_t p = 0; p < planes; ++p) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t r = 0; r + 11 <= h; ++r)
      for (int64_t c = 0; c + 11 <= w; ++c, ++n) {
        double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < 11; ++i)
          for (int j = 0; j < 11; ++j) {
            const double wt = g[i] * g[j] / (gs * gs);
            const double x = (a.f32()[(p * h + r + i) * w + c + j] + 1.0) / 2;
            const double y = (b.f32()[(p * h + r + i) * w + c + j] + 1.0) / 2;
            mx += wt * x, my += wt * y, xx += wt * x * x, yy += wt * y * y, xy += wt * x * y;
          }
        const double vx = xx - mx * mx, vy = yy - my * my, cv = xy - mx * my;
        sum += (2 * mx * my + 1e-4) * (2 * cv + 9e-4) /
               ((mx * mx + my * my + 1e-4) * (vx + vy + 9e-4));
      }
    total += sum / static_cast<double>(n);
  }
  return total / static_cast<double>(planes);
}

TEST(Metrics, SsimMatchesTheDefinitionAndOrdersDistortions) {
  const Tensor a = random_video(2, 20, 17, 2);
  EXPECT_NEAR(ssim(a, a), 1.0, 1e-12);
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Tensor small = a.clone(), large = a.clone();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float e = n(rng);
    small.f32()[i] += 0.05f * e;
    large.f32()[i] += 0.5f * e;
  }
  EXPECT_NEAR(ssim(small, a), ssim_direct(small, a), 1e-10);
  EXPECT_NEAR(ssim(large, a), ssim_direct(large, a), 1e-10);
  EXPECT_GT(ssim(small, a), ssim(large, a));
  EXPECT_LT(ssim(random_video(2, 20, 17, 9), a), 0.1);  // unrelated frames
}

TEST(Metrics, ShapesMustAgree) {
  EXPECT_THROW(psnr(random_video(1, 8, 8, 1), random_video(2, 8, 8, 1)), Error);
  EXPECT_THROW(ssim(Tensor::zeros({1, 1, 8, 8}), Tensor::zeros({1, 1, 8, 8})), Error);
}

}  // namespace
}  // namespace fisdit::analysis
