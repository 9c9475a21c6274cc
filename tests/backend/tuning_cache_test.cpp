// The tuning cache (backend/tuning_cache.h): what one process tuned, a later one reads, for the
// same device key only; torn or foreign files are ignored, and a cache that cannot be written
// keeps its entries in memory without failing the run.
#include "backend/tuning_cache.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "../env_scope.h"
#include "../io/io_test_util.h"

namespace fisdit {
namespace {

using iotest::TempDir;

TEST(TuningCache, ALaterInstanceReadsWhatAnEarlierOneWrote) {
  TempDir dir;
  {
    TuningCache c(dir.path().string(), "cudnn-conv", "GPU A sm90 cudnn 91002");
    ASSERT_TRUE(c.enabled());
    EXPECT_FALSE(c.get("ncdhw x=1").has_value());
    c.put("ncdhw x=1", "algo=1 ws=0 math=0 ms=0.5");
    c.put("layout x=1", "ncdhw");
    c.put("bad\tkey", "ignored");
    EXPECT_EQ(c.size(), 2u);
  }
  TuningCache again(dir.path().string(), "cudnn-conv", "GPU A sm90 cudnn 91002");
  EXPECT_EQ(again.get("ncdhw x=1"), "algo=1 ws=0 math=0 ms=0.5");
  EXPECT_EQ(again.get("layout x=1"), "ncdhw");
  // Another GPU or library version has its own file, and sees none of these.
  TuningCache other(dir.path().string(), "cudnn-conv", "GPU B sm90 cudnn 91002");
  EXPECT_NE(other.path(), again.path());
  EXPECT_FALSE(other.get("ncdhw x=1").has_value());
}

TEST(TuningCache, TwoWritersMergeAndForeignOrTornContentIsIgnored) {
  TempDir dir;
  const std::string key = "GPU A";
  TuningCache a(dir.path().string(), "c", key), b(dir.path().string(), "c", key);
  a.put("one", "1");
  b.put("two", "2");  // b read the file before a wrote: its write merges a's entry
  EXPECT_EQ(TuningCache(dir.path().string(), "c", key).size(), 2u);
  // A torn last line and a line without a tab are skipped, the rest is read.
  {
    std::ofstream out(a.path(), std::ios::app);
    out << "no tab here\n\tempty key\nthree\t3\nfour";
  }
  TuningCache c(dir.path().string(), "c", key);
  EXPECT_EQ(c.get("three"), "3");
  EXPECT_EQ(c.size(), 3u);
  // A file of another format is ignored, then replaced on the next put.
  std::ofstream(a.path(), std::ios::trunc) << "something else\none\tX\n";
  TuningCache d(dir.path().string(), "c", key);
  EXPECT_EQ(d.size(), 0u);
  d.put("five", "5");
  EXPECT_EQ(TuningCache(dir.path().string(), "c", key).get("five"), "5");
}

TEST(TuningCache, AnUnwritableDirectoryKeepsEntriesInMemoryAndOffDisables) {
  TempDir dir;
  const std::filesystem::path file = dir.path() / "not-a-directory";
  std::ofstream(file) << "x";
  TuningCache c(file.string(), "c", "GPU A");
  testing::internal::CaptureStderr();
  c.put("one", "1");
  c.put("two", "2");
  const std::string said = testing::internal::GetCapturedStderr();
  EXPECT_EQ(c.get("two"), "2");
  EXPECT_NE(said.find("cannot write the tuning cache"), std::string::npos) << said;
  EXPECT_EQ(said.find("cannot write", said.find("cannot write") + 1), std::string::npos)
      << "said once: " << said;

  {
    test::EnvScope off("FISDIT_CACHE_DIR", "off");
    EXPECT_EQ(TuningCache::default_dir(), "");
    EXPECT_FALSE(TuningCache("", "c", "GPU A").enabled());
  }
  test::EnvScope here("FISDIT_CACHE_DIR", dir.path().c_str());
  EXPECT_EQ(TuningCache::default_dir(), dir.path().string());
}

}  // namespace
}  // namespace fisdit
