// FIS plan semantics (docs: ../shared/docs/FIS.md): gates, anchor sets, coverage, presets.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "accel/fis.h"
#include "fisdit/error.h"

namespace fisdit::accel {
namespace {

FisConfig custom(int stride, int head, int tail, int dense_last, bool interleave = true) {
  FisConfig c;
  c.name = "custom";
  c.stride = stride;
  c.head = head;
  c.tail = tail;
  c.dense_last_steps = dense_last;
  c.interleave = interleave;
  return c;
}

TEST(FisPresets, MatchTheTableInFisMd) {
  const FisConfig b = fis_preset("balanced"), f = fis_preset("fast"), off = fis_preset("off");
  EXPECT_EQ(b.stride, 3);
  EXPECT_EQ(f.stride, 5);
  for (const FisConfig* c : {&b, &f}) {
    EXPECT_EQ(c->head, 1);
    EXPECT_EQ(c->tail, 1);
    EXPECT_EQ(c->dense_last_steps, 1);
    EXPECT_TRUE(c->interleave);
    EXPECT_EQ(c->granularity, Granularity::Module);
    EXPECT_EQ(c->reconstruct, Reconstruct::Linear);
  }
  EXPECT_FALSE(off.enabled());
  EXPECT_THROW(fis_preset("turbo"), Error);
}

TEST(FisPlanGates, SparseOnlyInsideBlockAndStepRanges) {
  const FisPlan plan(custom(3, 2, 3, 1), 12, 4, 21);
  for (int k = 0; k < 4; ++k) {
    for (int l = 0; l < 12; ++l) {
      const bool expect = k < 3 && l >= 2 && l < 9;
      EXPECT_EQ(plan.at(k, l).sparse, expect) << "step " << k << " block " << l;
    }
  }
  // The gate can be forced open (one forward of `fisdit dit`), block ranges still apply.
  EXPECT_TRUE(plan.plan_for(true, 2).sparse);
  EXPECT_FALSE(plan.plan_for(true, 1).sparse);
  EXPECT_FALSE(plan.plan_for(false, 5).sparse);
}

TEST(FisPlanAnchors, FollowTheInterleavedFormulaWithBoundaries) {
  const int T = 21, s = 3, head = 1;
  const FisPlan plan(custom(s, head, 1, 1), 40, 4, T);
  for (int l = head; l < 39; ++l) {
    const auto a = plan.at(0, l).anchors;
    ASSERT_TRUE(std::is_sorted(a.begin(), a.end()));
    ASSERT_EQ(std::set<int32_t>(a.begin(), a.end()).size(), a.size()) << "duplicates";
    EXPECT_EQ(a.front(), 0);
    EXPECT_EQ(a.back(), T - 1);
    const int o = (l - head) % s;
    for (int f = 0; f < T; ++f) {
      const bool in = std::find(a.begin(), a.end(), f) != a.end();
      EXPECT_EQ(in, f % s == o || f == 0 || f == T - 1) << "block " << l << " frame " << f;
    }
  }
  // The worked example: o = 0 -> {0,3,...,18,20}; o = 1 -> {0,1,4,...,19,20}.
  EXPECT_EQ(plan.at(0, 1).anchors, (std::vector<int32_t>{0, 3, 6, 9, 12, 15, 18, 20}));
  EXPECT_EQ(plan.at(0, 2).anchors, (std::vector<int32_t>{0, 1, 4, 7, 10, 13, 16, 19, 20}));
}

TEST(FisPlanAnchors, InterleavingCoversEveryFrameWithinStrideBlocks) {
  for (int s = 2; s <= 6; ++s) {
    for (int T : {5, 13, 21, 31}) {
      const FisPlan plan(custom(s, 1, 1, 0), 40, 1, T);
      for (int start = 1; start + s <= 39; ++start) {
        std::set<int32_t> seen;
        for (int l = start; l < start + s; ++l) {
          const auto bp = plan.at(0, l);
          if (!bp.sparse) {  // all frames anchors: covered trivially
            for (int f = 0; f < T; ++f) seen.insert(f);
            continue;
          }
          seen.insert(bp.anchors.begin(), bp.anchors.end());
        }
        EXPECT_EQ(static_cast<int>(seen.size()), T)
            << "s " << s << " T " << T << " start " << start;
      }
    }
  }
}

TEST(FisPlanAnchors, NonInterleavedUsesOffsetZeroEverywhere) {
  const FisPlan plan(custom(4, 1, 1, 0, /*interleave=*/false), 10, 1, 13);
  for (int l = 1; l < 9; ++l) EXPECT_EQ(plan.at(0, l).anchors, (std::vector<int32_t>{0, 4, 8, 12}));
}

TEST(FisPlanDense, StrideOneOrTwoFramesOrNoSparsePairIsDense) {
  const FisPlan s1(custom(1, 0, 0, 0), 8, 4, 21);
  const FisPlan short_video(custom(3, 0, 0, 0), 8, 4, 2);
  const FisPlan one_frame(custom(3, 0, 0, 0), 8, 4, 1);
  const FisPlan all_dense_steps(custom(3, 0, 0, 4), 8, 4, 21);
  const FisPlan all_dense_blocks(custom(3, 4, 4, 0), 8, 4, 21);
  for (const FisPlan* p : {&s1, &short_video, &one_frame, &all_dense_steps, &all_dense_blocks})
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 8; ++l) EXPECT_FALSE(p->at(k, l).sparse);
}

TEST(FisConfigValidation, RejectsInconsistentSettings) {
  FisConfig c = fis_preset("balanced");
  c.reconstruct = Reconstruct::Delta;  // delta needs block granularity
  EXPECT_THROW(c.validate(), Error);
  c.granularity = Granularity::Block;
  EXPECT_NO_THROW(c.validate());
  c.stride = 0;
  EXPECT_THROW(c.validate(), Error);
  EXPECT_THROW(parse_granularity("frame"), Error);
  EXPECT_THROW(parse_reconstruct("cubic"), Error);
}

TEST(FisConfigJson, PresetFileRoundTripsAndRejectsUnknownFields) {
  const auto dir = std::filesystem::temp_directory_path() / "fisdit_fis_json_test";
  std::filesystem::create_directories(dir);
  FisConfig c = fis_preset("fast");
  c.granularity = Granularity::Block;
  c.reconstruct = Reconstruct::Delta;
  c.interleave = false;
  const auto path = (dir / "preset.json").string();
  std::ofstream(path) << c.to_json().dump();
  const FisConfig back = fis_preset(path);
  EXPECT_EQ(back.stride, 5);
  EXPECT_EQ(back.granularity, Granularity::Block);
  EXPECT_EQ(back.reconstruct, Reconstruct::Delta);
  EXPECT_FALSE(back.interleave);
  const auto bad = (dir / "bad.json").string();
  std::ofstream(bad) << R"({"stride": 3, "strid": 4})";
  try {
    fis_preset(bad);
    FAIL() << "unknown field accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("strid"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fisdit::accel
