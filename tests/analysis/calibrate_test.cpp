// The calibration rule on hand-built analyses whose errors and risks are known.
#include "analysis/calibrate.h"

#include <gtest/gtest.h>

#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {

using nlohmann::json;

// An analysis of `blocks` blocks, 2 steps, 5 frames. Block l's R_f alternates between
// m (1 - c_l) and m (1 + c_l): std_f(R_f) = m c_l, so its risk at measured stride s_m is
// (s_m - 1) / 2 * m * c_l. The final block's error of the setting with stride s is err[s].
json analysis(const std::vector<double>& c, const std::vector<std::pair<int, double>>& err,
              int head = 0, int tail = 0) {
  const int blocks = static_cast<int>(c.size()), steps = 2, frames = 5;
  const double m = 0.4;
  json a = {
      {"format", "fisdit-analysis"}, {"num_blocks", blocks}, {"steps", steps}, {"frames", frames}};
  a["rel_change"] = json::array();
  a["cv"] = json::array();
  for (int k = 0; k < steps; ++k) {
    json per_block = json::array(), cvs = json::array();
    for (int l = 0; l < blocks; ++l) {
      per_block.push_back({m * (1 - c[l]), m * (1 + c[l]), m * (1 - c[l]), m * (1 + c[l])});
      cvs.push_back(c[l]);
    }
    a["rel_change"].push_back(per_block);
    a["cv"].push_back(cvs);
  }
  a["fis"] = json::array();
  for (const auto& [s, e] : err) {
    accel::FisConfig cfg = accel::fis_preset("balanced");
    cfg.stride = s;
    cfg.head = head;
    cfg.tail = tail;
    json error = json::array();
    for (int k = 0; k < steps; ++k) {
      json per_block = json::array();
      for (int l = 0; l < blocks; ++l)
        per_block.push_back(std::vector<double>(frames, l == blocks - 1 && k == 0 ? e : 0.0));
      error.push_back(per_block);
    }
    a["fis"].push_back({{"config", cfg.to_json()}, {"error", error}});
  }
  return a;
}

TEST(Calibrate, PicksTheLargestMeasuredStrideWithinTheBudget) {
  // Risks at s_m = 2: 0.2 * c_l = 0.06, 0.01, 0.01, 0.01, 0.03.
  const json a = analysis({0.3, 0.05, 0.05, 0.05, 0.15}, {{2, 0.01}, {3, 0.02}, {4, 0.04}});
  const Calibration c1 = calibrate_fis(a, 0.025, "a.json");
  EXPECT_EQ(c1.config.stride, 3);
  EXPECT_EQ(c1.config.head, 1);  // 0.06 > 0.025
  EXPECT_EQ(c1.config.tail, 1);  // 0.03 > 0.025
  EXPECT_EQ(c1.config.dense_last_steps, 1);
  const Calibration c2 = calibrate_fis(a, 0.05, "a.json");
  EXPECT_EQ(c2.config.stride, 4);
  EXPECT_EQ(c2.config.head, 1);  // 0.06 > 0.05
  EXPECT_EQ(c2.config.tail, 0);
  const Calibration c3 = calibrate_fis(a, 0.1, "a.json");
  EXPECT_EQ(c3.config.stride, 4);
  EXPECT_EQ(c3.config.head, 0);
  EXPECT_EQ(c3.config.tail, 0);
  const Calibration c0 = calibrate_fis(a, 0.005, "a.json");
  EXPECT_EQ(c0.config.stride, 1);
  EXPECT_FALSE(c0.config.enabled());
  EXPECT_FALSE(c3.reasoning.empty());
}

TEST(Calibrate, ChoicesMoveWithTheBudget) {
  const json a =
      analysis({0.9, 0.5, 0.2, 0.1, 0.1, 0.3, 0.7}, {{2, 0.01}, {3, 0.03}, {5, 0.06}, {7, 0.2}});
  int last_stride = 0, last_dense = 1 << 30;
  for (double budget : {0.001, 0.01, 0.02, 0.03, 0.05, 0.08, 0.15, 0.3}) {
    const accel::FisConfig c = calibrate_fis(a, budget, "a.json").config;
    const int dense_blocks = c.enabled() ? c.head + c.tail : 7;
    EXPECT_GE(c.stride, last_stride) << budget;
    EXPECT_LE(dense_blocks, last_dense) << budget;
    last_stride = c.stride;
    last_dense = dense_blocks;
  }
  EXPECT_EQ(last_stride, 7);
}

TEST(Calibrate, StopsAtTheFirstMeasuredStrideOverTheBudget) {
  const json a = analysis({0.01, 0.01, 0.01}, {{2, 0.01}, {3, 0.05}, {4, 0.03}});
  EXPECT_EQ(calibrate_fis(a, 0.04, "a.json").config.stride, 2);
  EXPECT_EQ(calibrate_fis(a, 0.05, "a.json").config.stride, 4);
}

TEST(Calibrate, OneMeasuredStrideIsExtrapolatedConservatively) {
  const json a = analysis({0.01, 0.01, 0.01}, {{3, 0.1}});
  // error estimate: s=2 0.05, s=3 0.1, s=4 0.1 * (3/2)^2 = 0.225 (stride <= T - 1 = 4).
  EXPECT_EQ(calibrate_fis(a, 0.04, "a.json").config.stride, 1);
  EXPECT_EQ(calibrate_fis(a, 0.05, "a.json").config.stride, 2);
  EXPECT_EQ(calibrate_fis(a, 0.2, "a.json").config.stride, 3);
  EXPECT_EQ(calibrate_fis(a, 0.23, "a.json").config.stride, 4);
  EXPECT_EQ(calibrate_fis(a, 10, "a.json").config.stride, 4);
}

TEST(Calibrate, NeverFewerDenseEndsThanMeasured) {
  const json a = analysis({0.0, 0.0, 0.0, 0.0}, {{2, 0.01}}, 1, 1);
  const accel::FisConfig c = calibrate_fis(a, 0.5, "a.json").config;
  EXPECT_EQ(c.head, 1);
  EXPECT_EQ(c.tail, 1);
}

TEST(Calibrate, PresetRoundTripsThroughFisFromJson) {
  const json a = analysis({0.3, 0.05, 0.05, 0.05, 0.15}, {{2, 0.01}, {3, 0.02}});
  const accel::FisConfig c = calibrate_fis(a, 0.025, "a.json").config;
  const accel::FisConfig back = accel::fis_from_json(c.to_json(), "preset");
  EXPECT_EQ(back.stride, c.stride);
  EXPECT_EQ(back.head, c.head);
  EXPECT_EQ(back.tail, c.tail);
  EXPECT_EQ(back.dense_last_steps, c.dense_last_steps);
  EXPECT_EQ(back.name, "calibrated");
}

TEST(Calibrate, BadInputIsAnError) {
  const json a = analysis({0.1, 0.1}, {{2, 0.01}});
  EXPECT_THROW(calibrate_fis(a, 0, "a.json"), Error);
  EXPECT_THROW(calibrate_fis(a, -1, "a.json"), Error);
  EXPECT_THROW(calibrate_fis(json{{"format", "other"}}, 0.1, "a.json"), Error);
  EXPECT_THROW(calibrate_fis(analysis({0.1, 0.1}, {}), 0.1, "a.json"), Error);  // nothing measured
  json broken = a;
  broken["fis"][0]["error"] = json::array();
  EXPECT_THROW(calibrate_fis(broken, 0.1, "a.json"), Error);
}

}  // namespace
}  // namespace fisdit::analysis
