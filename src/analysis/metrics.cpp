#include "analysis/metrics.h"

#include <cmath>
#include <limits>
#include <vector>

#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {

void check_pair(const Tensor& a, const Tensor& b, const char* what) {
  if (a.ndim() != 4 || a.dim(0) != 3 || a.shape() != b.shape())
    throw Error(std::string(what) + ": expects two videos [3, F, H, W] of one shape, got " +
                shape_str(a.shape()) + " and " + shape_str(b.shape()));
}

// x in [-1, 1] -> [0, 1]
inline double unit(float x) { return (static_cast<double>(x) + 1.0) * 0.5; }

}  // namespace

double psnr(const Tensor& video, const Tensor& reference) {
  check_pair(video, reference, "psnr");
  const Tensor a = video.to_f32(), b = reference.to_f32();
  double sum = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = unit(a.f32()[i]) - unit(b.f32()[i]);
    sum += d * d;
  }
  const double mse = sum / static_cast<double>(a.numel());
  if (mse == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(1.0 / mse);
}

std::vector<double> frame_mse(const Tensor& video, const Tensor& reference) {
  check_pair(video, reference, "frame_mse");
  const Tensor a = video.to_f32(), b = reference.to_f32();
  const int64_t frames = a.dim(1), plane = a.dim(2) * a.dim(3);
  std::vector<double> mse(static_cast<size_t>(frames));
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t f = 0; f < frames; ++f) {
      const float *pa = a.f32() + (c * frames + f) * plane,
                  *pb = b.f32() + (c * frames + f) * plane;
      double sum = 0;
      for (int64_t i = 0; i < plane; ++i) {
        const double d = unit(pa[i]) - unit(pb[i]);
        sum += d * d;
      }
      mse[static_cast<size_t>(f)] += sum / static_cast<double>(3 * plane);
    }
  return mse;
}

double ssim(const Tensor& video, const Tensor& reference) {
  check_pair(video, reference, "ssim");
  const Tensor a = video.to_f32(), b = reference.to_f32();
  const int64_t frames = a.dim(1), h = a.dim(2), w = a.dim(3), planes = 3 * frames;
  constexpr double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  // The window: 11 taps of a sigma-1.5 Gaussian, or the whole (smaller) frame, uniform.
  const int64_t kh = h >= 11 ? 11 : h, kw = w >= 11 ? 11 : w;
  auto taps = [](int64_t n) {
    std::vector<double> g(static_cast<size_t>(n));
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(i) - static_cast<double>(n - 1) / 2.0;
      g[static_cast<size_t>(i)] = n == 11 ? std::exp(-x * x / (2 * 1.5 * 1.5)) : 1.0;
      s += g[static_cast<size_t>(i)];
    }
    for (double& v : g) v /= s;
    return g;
  };
  const std::vector<double> gy = taps(kh), gx = taps(kw);
  const int64_t oh = h - kh + 1, ow = w - kw + 1;
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(dynamic)
  for (int64_t p = 0; p < planes; ++p) {
    const float* pa = a.f32() + p * h * w;
    const float* pb = b.f32() + p * h * w;
    // Separable filtering of x, y, x^2, y^2, xy: rows first, then columns.
    std::vector<double> rows(static_cast<size_t>(5 * h * ow));
    for (int64_t r = 0; r < h; ++r)
      for (int64_t c = 0; c < ow; ++c) {
        double s[5] = {0, 0, 0, 0, 0};
        for (int64_t k = 0; k < kw; ++k) {
          const double x = unit(pa[r * w + c + k]), y = unit(pb[r * w + c + k]);
          const double g = gx[static_cast<size_t>(k)];
          s[0] += g * x, s[1] += g * y, s[2] += g * x * x, s[3] += g * y * y, s[4] += g * x * y;
        }
        for (int m = 0; m < 5; ++m) rows[static_cast<size_t>((m * h + r) * ow + c)] = s[m];
      }
    double plane_sum = 0;
    for (int64_t r = 0; r < oh; ++r)
      for (int64_t c = 0; c < ow; ++c) {
        double s[5] = {0, 0, 0, 0, 0};
        for (int64_t k = 0; k < kh; ++k)
          for (int m = 0; m < 5; ++m)
            s[m] +=
                gy[static_cast<size_t>(k)] * rows[static_cast<size_t>((m * h + r + k) * ow + c)];
        const double mx = s[0], my = s[1];
        const double vx = s[2] - mx * mx, vy = s[3] - my * my, cov = s[4] - mx * my;
        plane_sum +=
            ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
      }
    total += plane_sum / static_cast<double>(oh * ow);
  }
  return total / static_cast<double>(planes);
}

}  // namespace fisdit::analysis
