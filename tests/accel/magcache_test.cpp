// MagCache's decisions (accel/magcache.h) on hand-made ratio sequences, worked out by hand from
// the rule: on an eligible step ratio *= gamma, steps += 1, err += |1 - ratio|; skip when
// err < threshold and steps <= K, else compute and reset.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "accel/magcache.h"
#include "fisdit/error.h"

namespace fisdit::accel {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

MagCacheConfig config(std::vector<double> cond, double threshold, int k, double retention) {
  MagCacheConfig c;
  c.enabled = true;
  c.threshold = threshold;
  c.max_skips = k;
  c.retention = retention;
  c.ratios.cond = std::move(cond);
  return c;
}

// Runs MagCache over every step of branch 0, filling the residual cache after computed steps
// like the sampling loop does; returns 'C' (computed) or 'S' (skipped) per step.
std::string decisions(MagCache& mc, int branch = 0) {
  std::string out;
  for (int k = 0; k < mc.steps(); ++k) {
    const bool skip = mc.skip(k, branch);
    if (!skip) mc.residual(branch) = Tensor::zeros({1, 1});
    out += skip ? 'S' : 'C';
  }
  return out;
}

TEST(MagCacheState, AccumulatesRatioErrorAndStepsLikeTheReference) {
  MagCacheState s;
  // gamma 0.99: ratio 0.99, err 0.01 -> skip (0.01 < 0.05, 1 <= 2).
  EXPECT_TRUE(s.decide(0.99, 0.05, 2, false));
  EXPECT_DOUBLE_EQ(s.accumulated_ratio, 0.99);
  EXPECT_NEAR(s.accumulated_err, 0.01, 1e-15);
  EXPECT_EQ(s.accumulated_steps, 1);
  // gamma 0.98: ratio 0.9702, err 0.01 + 0.0298 = 0.0398 -> skip.
  EXPECT_TRUE(s.decide(0.98, 0.05, 2, false));
  EXPECT_NEAR(s.accumulated_ratio, 0.9702, 1e-12);
  EXPECT_NEAR(s.accumulated_err, 0.0398, 1e-12);
  // gamma 1: ratio unchanged, err 0.0398 + 0.0298 = 0.0696 >= 0.05 -> compute and reset.
  EXPECT_FALSE(s.decide(1.0, 0.05, 2, false));
  EXPECT_EQ(s.accumulated_ratio, 1.0);
  EXPECT_EQ(s.accumulated_err, 0.0);
  EXPECT_EQ(s.accumulated_steps, 0);
}

TEST(MagCacheState, KBoundsConsecutiveSkipsAndForceIgnoresTheError) {
  MagCacheState s;
  EXPECT_TRUE(s.decide(1.0, 0.1, 2, false));
  EXPECT_TRUE(s.decide(1.0, 0.1, 2, false));
  EXPECT_FALSE(s.decide(1.0, 0.1, 2, false));  // third in a row: steps 3 > K
  MagCacheState f;
  EXPECT_TRUE(f.decide(5.0, 0.0, 1, true));  // error 4 ignored
  EXPECT_FALSE(f.decide(5.0, 0.0, 1, true));
  MagCacheState zero;
  EXPECT_FALSE(zero.decide(1.0, 0.0, 5, false));  // threshold 0: err < 0 never holds
  MagCacheState k0;
  EXPECT_FALSE(k0.decide(1.0, 1.0, 0, false));  // K 0 never skips
}

TEST(MagCache, RetentionThenSkipsAsTheErrorAllows) {
  // 10 steps, retention 0.2 -> steps 0, 1 computed. Then (threshold 0.1, K 2):
  // k2 g .98: r .98 e .02 S | k3 g .97: r .9506 e .0694 S | k4 g .99: steps 3 > 2 -> C
  // k5 g .89: r .89 e .11 -> C | k6 g 1.0: e 0 S | k7 g .95: e .05 S | k8: C (K)
  // k9 g 1.2: e .2 -> C
  MagCache mc(config({1, 1, .98, .97, .99, .89, 1.0, .95, 1.0, 1.2}, 0.1, 2, 0.2),
              std::vector<int>(10, 0));
  EXPECT_EQ(decisions(mc), "CCSSCCSSCC");
}

TEST(MagCache, AtLeastOneStepIsRetainedAndRetentionRoundsUpPerPhase) {
  MagCacheConfig c = config({1, 1, 1, 1}, 1.0, 3, 0.0);
  MagCache none(c, {0, 0, 0, 0});
  EXPECT_EQ(decisions(none), "CSSS");  // retention 0 still computes step 0 (no residual yet)
  c.retention = 0.3;                   // ceil(4 * 0.3) = 2
  MagCache some(c, {0, 0, 0, 0});
  EXPECT_EQ(decisions(some), "CCSS");
  // Two expert phases of 3 and 3 steps, retention 0.2 -> ceil(0.6) = 1 per phase: the
  // low-noise phase starts with a computed step, the caches cleared at the switch.
  MagCacheConfig two = config(std::vector<double>(6, 1.0), 1.0, 5, 0.2);
  MagCache phases(two, {0, 0, 0, 1, 1, 1});
  EXPECT_TRUE(phases.retained(0));
  EXPECT_FALSE(phases.retained(1));
  EXPECT_TRUE(phases.retained(3));
  EXPECT_EQ(decisions(phases), "CSSCSS");
  // An uncached phase (i2v-A14B's high-noise phase) is never skipped.
  MagCache i2v(two, {0, 0, 0, 1, 1, 1}, {false, true});
  EXPECT_EQ(decisions(i2v), "CCCCSS");
}

TEST(MagCache, ExpertSwitchDropsTheCachedResiduals) {
  MagCacheConfig c = config(std::vector<double>(4, 1.0), 1.0, 5, 0.0);
  MagCache mc(c, {0, 0, 1, 1});
  EXPECT_FALSE(mc.skip(0, 0));
  mc.residual(0) = Tensor::zeros({1, 1});
  EXPECT_TRUE(mc.skip(1, 0));
  EXPECT_FALSE(mc.skip(2, 0));  // new phase: retained, and nothing carried over
  EXPECT_FALSE(mc.residual(0).defined());
}

TEST(MagCache, CfgBranchesKeepSeparateStatesAndRatios) {
  MagCacheConfig c = config({1, 1, 1}, 0.05, 5, 0.0);
  c.ratios.uncond = {1, 0.5, 1};  // the unconditional pass changes a lot at step 1
  MagCache mc(c, {0, 0, 0});
  std::string cond, uncond;
  for (int k = 0; k < 3; ++k)
    for (int b = 0; b < 2; ++b) {
      const bool skip = mc.skip(k, b);
      if (!skip) mc.residual(b) = Tensor::zeros({1, 1});
      (b ? uncond : cond) += skip ? 'S' : 'C';
    }
  EXPECT_EQ(cond, "CSS");
  EXPECT_EQ(uncond, "CCS");  // err |1 - 0.5| at step 1 computes; reset, then 0 at step 2
}

TEST(MagCache, ForceNeedsNoRatiosAndSkipsUpToK) {
  MagCacheConfig c;
  c.enabled = true;
  c.force = true;
  c.max_skips = 2;
  c.retention = 0.2;  // 8 steps -> ceil(1.6) = 2 retained
  MagCache mc(c, std::vector<int>(8, 0));
  EXPECT_EQ(decisions(mc), "CCSSCSSC");
}

TEST(MagCache, RatiosOfAnotherStepCountAreResampledByNearestIndex) {
  // The reference's nearest_interp: index round(i (n-1)/(N-1)), numpy rounding (half to even).
  EXPECT_EQ(nearest_interp({10, 11, 12, 13, 14}, 3), (std::vector<double>{10, 12, 14}));
  EXPECT_EQ(nearest_interp({10, 11, 12, 13}, 3), (std::vector<double>{10, 12, 13}));  // 1.5 -> 2
  EXPECT_EQ(nearest_interp({10, 11, 12, 13, 14, 15}, 5),
            (std::vector<double>{10, 11, 12, 14, 15}));  // 2.5 -> 2
  EXPECT_EQ(nearest_interp({10, 11, 12}, 1), (std::vector<double>{12}));
  EXPECT_EQ(nearest_interp({10, 11}, 4), (std::vector<double>{10, 10, 11, 11}));
  // A 2-step calibration used for 4 steps: gamma (1, 1, 0.5, 0.5), threshold 0.6, K 3.
  MagCacheConfig c = config({1, 0.5}, 0.6, 3, 0.0);
  MagCache mc(c, {0, 0, 0, 0});
  EXPECT_EQ(decisions(mc), "CSSC");  // k2: err .5 S; k3: ratio .25, err 1.25 C
}

TEST(MagCache, MagnitudeRatioIsTheMeanOfPerTokenNormRatios) {
  Tensor now = Tensor::from_vector({3, 4, 0, 2, 1, 1}, {3, 2});
  Tensor prev = Tensor::from_vector({0, 1, 1, 0, 0, 0}, {3, 2});
  const auto n = token_norms(now), p = token_norms(prev);
  EXPECT_EQ(n, (std::vector<double>{5, 2, std::sqrt(2.0)}));
  // Token 2 had norm 0 before: left out. (5 / 1 + 2 / 1) / 2.
  EXPECT_DOUBLE_EQ(magnitude_ratio(n, p), 3.5);
  EXPECT_DOUBLE_EQ(magnitude_ratio(p, p), 1.0);
  EXPECT_NE(error_of([&] { magnitude_ratio(n, {1.0}); }), "");
}

TEST(MagCache, RatiosFileRoundTripsAndBadFilesNameTheProblem) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("fisdit_magcache_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "r.json").string();
  MagRatios r;
  r.cond = {1, 0.99, 0.95};
  r.uncond = {1, 0.98, 0.9};
  r.info = R"({"steps":3})";
  save_mag_ratios(path, r);
  const MagRatios back = load_mag_ratios(path);
  EXPECT_EQ(back.cond, r.cond);
  EXPECT_EQ(back.uncond, r.uncond);
  EXPECT_EQ(nlohmann::json::parse(back.info).at("steps"), 3);

  auto write = [&](const std::string& text) {
    std::ofstream(path) << text;
    return error_of([&] { load_mag_ratios(path); });
  };
  EXPECT_NE(write("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(write(R"({"cond":[1]})").find("fisdit calibrate --magcache"), std::string::npos);
  EXPECT_NE(write(R"({"format":"fisdit-magcache-ratios","version":1,"cond":[1,-2]})").find("-2"),
            std::string::npos);
  EXPECT_NE(write(R"({"format":"fisdit-magcache-ratios","version":1,"cond":[1],"uncond":[1,1]})")
                .find("'uncond' has 2"),
            std::string::npos);
  EXPECT_NE(write(R"({"format":"fisdit-magcache-ratios","version":1})").find("'cond'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_mag_ratios((dir / "missing.json").string()); }).find("cannot open"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(MagCache, BadSettingsNameTheParameter) {
  MagCacheConfig c = config({1}, 0.1, 2, 0.2);
  c.threshold = -1;
  EXPECT_EQ(iotest::param_of([&] { c.validate(); }), "magcache_thresh");
  c = config({1}, 0.1, -1, 0.2);
  EXPECT_EQ(iotest::param_of([&] { c.validate(); }), "magcache_K");
  c = config({1}, 0.1, 2, 1.5);
  EXPECT_EQ(iotest::param_of([&] { c.validate(); }), "magcache_retention");
  c = config({}, 0.1, 2, 0.2);
  EXPECT_EQ(iotest::param_of([&] { c.validate(); }), "magcache_ratios");
  c.force = true;
  EXPECT_EQ(error_of([&] { c.validate(); }), "");
  // Guidance with ratios calibrated without it.
  MagCache mc(config({1, 1}, 1.0, 2, 0.0), {0, 0});
  EXPECT_FALSE(mc.skip(0, 1));
  mc.residual(1) = Tensor::zeros({1, 1});
  EXPECT_NE(error_of([&] { mc.skip(1, 1); }).find("uncond"), std::string::npos);
}

}  // namespace
}  // namespace fisdit::accel
