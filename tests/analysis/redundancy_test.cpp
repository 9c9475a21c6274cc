// Eq. 1-6 on hand-built hidden states whose values are known in closed form.
#include "analysis/redundancy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {

// [frames * tokens, channels]: every token of frame f is `scale[f]` times a fixed per-token
// direction of unit norm (so M_f = scale[f] for every token).
Tensor frames_with_norms(const std::vector<double>& scale, int64_t tokens, int64_t channels) {
  const int64_t frames = static_cast<int64_t>(scale.size());
  Tensor t = Tensor::zeros({frames * tokens, channels});
  for (int64_t f = 0; f < frames; ++f)
    for (int64_t k = 0; k < tokens; ++k)
      for (int64_t c = 0; c < channels; ++c) {
        // direction: +-1/sqrt(C), the sign varying with token and channel
        const double sign = ((k + c) % 3 == 0) ? -1.0 : 1.0;
        t.f32()[(f * tokens + k) * channels + c] =
            static_cast<float>(scale[static_cast<size_t>(f)] * sign / std::sqrt(channels));
      }
  return t;
}

TEST(Redundancy, TokenNormsAreL2OverChannels) {
  Tensor t = Tensor::from_vector({3, 4, 0, 0, 1, 2, 2, 0}, {4, 2});  // 2 frames x 2 tokens
  const auto m = token_norms(t, 2);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_DOUBLE_EQ(m[0][0], 5.0);
  EXPECT_DOUBLE_EQ(m[0][1], 0.0);
  EXPECT_NEAR(m[1][0], std::sqrt(5.0), 1e-12);
  EXPECT_DOUBLE_EQ(m[1][1], 2.0);
}

TEST(Redundancy, RelativeChangeAndCvInClosedForm) {
  // M_f = a_f on every token: R_f = |a_{f+1} - a_f| / a_f = 1, 0.5, 1 for a = 1, 2, 3, 6.
  const Tensor t = frames_with_norms({1, 2, 3, 6}, 6, 8);
  const std::vector<double> r = adjacent_change(t, 4);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_NEAR(r[0], 1.0, 1e-6);
  EXPECT_NEAR(r[1], 0.5, 1e-6);
  EXPECT_NEAR(r[2], 1.0, 1e-6);
  // mean 5/6, population std sqrt(1/18): CV = sqrt(2) / 5.
  EXPECT_NEAR(coefficient_of_variation(r), std::sqrt(2.0) / 5.0, 1e-6);
  // The [T, tokens, C] layout is the same data.
  EXPECT_EQ(adjacent_change(t.reshape({4, 6, 8}), 4), r);
}

TEST(Redundancy, GeometricGrowthHasZeroCv) {
  const std::vector<double> r = adjacent_change(frames_with_norms({1, 2, 4, 8, 16}, 3, 4), 5);
  for (double v : r) EXPECT_NEAR(v, 1.0, 1e-6);
  EXPECT_NEAR(coefficient_of_variation(r), 0.0, 1e-6);
  EXPECT_EQ(coefficient_of_variation({2.0}), 0.0);
  EXPECT_EQ(coefficient_of_variation({}), 0.0);
  EXPECT_EQ(coefficient_of_variation({0.0, 0.0}), 0.0);
  EXPECT_TRUE(adjacent_change(frames_with_norms({1}, 3, 4), 1).empty());
}

TEST(Redundancy, ChangeOfAZeroFrame) {
  const std::vector<double> r = adjacent_change(frames_with_norms({0, 0, 1}, 2, 2), 3);
  EXPECT_EQ(r[0], 0.0);
  EXPECT_TRUE(std::isinf(r[1]));
}

TEST(Redundancy, FrameErrorOfAScaledFrame) {
  const Tensor dense = frames_with_norms({1, 2, 3, 4}, 5, 4);
  Tensor sparse = dense.to_f32();
  for (int64_t i = 2 * 20; i < 3 * 20; ++i) sparse.f32()[i] *= 1.1f;  // frame 2
  const std::vector<double> e = frame_relative_error(sparse, dense, 4);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0], 0.0);
  EXPECT_EQ(e[1], 0.0);
  EXPECT_NEAR(e[2], 0.1, 1e-6);
  EXPECT_EQ(e[3], 0.0);
}

TEST(Redundancy, FrameErrorOfLinearInterpolationOfAQuadratic) {
  // Dense X_f = f^2 V; the anchors 0, 2, 4 are copied and frames 1, 3 linearly interpolated:
  // frame 1 -> (0 + 4) / 2 V = 2V against V (error 1), frame 3 -> (4 + 16) / 2 V = 10V against
  // 9V (error 1/9).
  const Tensor dense = frames_with_norms({0, 1, 4, 9, 16}, 3, 2);
  const Tensor sparse = frames_with_norms({0, 2, 4, 10, 16}, 3, 2);
  const std::vector<double> e = frame_relative_error(sparse, dense, 5);
  EXPECT_EQ(e[0], 0.0);
  EXPECT_NEAR(e[1], 1.0, 1e-6);
  EXPECT_EQ(e[2], 0.0);
  EXPECT_NEAR(e[3], 1.0 / 9.0, 1e-6);
  EXPECT_EQ(e[4], 0.0);
  // An all-zero dense frame with a nonzero sparse one.
  EXPECT_TRUE(std::isinf(frame_relative_error(dense, sparse, 5)[0]) == false);
  const Tensor z = frames_with_norms({0, 1}, 1, 2), nz = frames_with_norms({1, 1}, 1, 2);
  EXPECT_TRUE(std::isinf(frame_relative_error(nz, z, 2)[0]));
}

TEST(Redundancy, BadShapesAreErrors) {
  const Tensor a = Tensor::zeros({6, 4}), b = Tensor::zeros({8, 4});
  EXPECT_THROW(frame_relative_error(a, b, 2), Error);
  EXPECT_THROW(adjacent_change(a, 4), Error);  // 6 tokens do not split into 4 frames
  EXPECT_THROW(adjacent_change(Tensor::zeros({24}), 2), Error);
  EXPECT_THROW(token_norms(a, 0), Error);
}

}  // namespace
}  // namespace fisdit::analysis
