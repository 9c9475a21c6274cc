// choose_fastest (backend/measured_choice.h): the fastest candidate of a shape, measured once and
// then read from the tuning cache, in this process and in a later one on the same device key.
#include "backend/measured_choice.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../io/io_test_util.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

using iotest::TempDir;

// A candidate's times: its first (warm-up) run, then its later ones.
struct FakeTimes {
  std::vector<std::vector<double>> ms;  // per candidate, per run
  std::vector<int> calls;
  explicit FakeTimes(std::vector<std::vector<double>> times)
      : ms(std::move(times)), calls(ms.size(), 0) {}
  TimeCandidate timer() {
    return [this](size_t i) {
      const int run = calls[i]++;
      return ms[i][static_cast<size_t>(run) % ms[i].size()];
    };
  }
};

TEST(MeasuredChoice, PicksTheBestLaterRunAndRemembersIt) {
  TuningCache cache("", "attention", "GPU A");  // in memory only
  // bf16 is faster once warm; fp8's warm-up is the fastest run of all but is not counted.
  FakeTimes t({{9.0, 0.05, 0.06}, {0.01, 0.16, 0.17}});
  const std::vector<std::string> names = {"bf16", "cudnn"};
  EXPECT_EQ(choose_fastest(cache, "lq=1280 heads=24", names, t.timer(), 3), 0u);
  EXPECT_EQ(t.calls, (std::vector<int>{3, 3}));
  EXPECT_EQ(cache.get("lq=1280 heads=24"), "bf16 bf16=0.05 cudnn=0.16");
  // Chosen again without running anything.
  EXPECT_EQ(choose_fastest(cache, "lq=1280 heads=24", names, t.timer(), 3), 0u);
  EXPECT_EQ(t.calls, (std::vector<int>{3, 3}));
  // Another shape is measured on its own.
  FakeTimes big({{37.7, 37.7}, {29.0, 29.0}});
  EXPECT_EQ(choose_fastest(cache, "lq=32760 heads=40", names, big.timer()), 1u);
  EXPECT_EQ(big.calls, (std::vector<int>{2, 2}));
  // One run: that run counts.
  FakeTimes once({{2.0}, {1.0}});
  EXPECT_EQ(choose_fastest(cache, "one run", names, once.timer(), 1), 1u);
  EXPECT_EQ(once.calls, (std::vector<int>{1, 1}));
}

TEST(MeasuredChoice, ALaterProcessReadsTheChoiceFromTheCacheFile) {
  TempDir dir;
  const std::vector<std::string> names = {"bf16", "cudnn", "own-ws"};
  {
    TuningCache cache(dir.path().string(), "attention", "GPU A");
    FakeTimes t({{1.0, 3.0}, {1.0, 2.0}, {1.0, 2.5}});
    EXPECT_EQ(choose_fastest(cache, "k", names, t.timer()), 1u);
  }
  TuningCache later(dir.path().string(), "attention", "GPU A");
  FakeTimes untouched({{1.0}, {1.0}, {1.0}});
  EXPECT_EQ(choose_fastest(later, "k", names, untouched.timer()), 1u);
  EXPECT_EQ(untouched.calls, (std::vector<int>{0, 0, 0}));
  // A build whose candidates do not include the cached one measures again and replaces it.
  const std::vector<std::string> fewer = {"bf16", "own-ws"};
  FakeTimes again({{1.0, 3.0}, {1.0, 2.5}});
  EXPECT_EQ(choose_fastest(later, "k", fewer, again.timer()), 1u);
  EXPECT_EQ(again.calls, (std::vector<int>{2, 2}));
  EXPECT_EQ(TuningCache(dir.path().string(), "attention", "GPU A").get("k"),
            "own-ws bf16=3 own-ws=2.5");
  // Another device key measures for itself.
  TuningCache other(dir.path().string(), "attention", "GPU B");
  FakeTimes b({{1.0, 1.0}, {1.0, 4.0}, {1.0, 4.0}});
  EXPECT_EQ(choose_fastest(other, "k", names, b.timer()), 0u);
}

TEST(MeasuredChoice, ACandidateThatCannotRunIsNeverChosen) {
  TuningCache cache("", "attention", "GPU A");
  const std::vector<std::string> names = {"cudnn", "bf16"};
  // cuDNN declines the shape (negative time): bf16, however slow.
  FakeTimes t({{-1.0}, {100.0, 100.0}});
  EXPECT_EQ(choose_fastest(cache, "declined", names, t.timer()), 1u);
  EXPECT_EQ(t.calls, (std::vector<int>{1, 2})) << "a candidate that cannot run is not run again";
  EXPECT_EQ(cache.get("declined"), "bf16 bf16=100");
  FakeTimes none({{-1.0}, {-1.0}});
  try {
    choose_fastest(cache, "nothing runs", names, none.timer());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing runs: none of its 2 candidates"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(choose_fastest(cache, "empty", {}, none.timer()), Error);
}

}  // namespace
}  // namespace fisdit
