// fisdit generate with a Wan release on the GPU, one-shot: each DiT expert is prepared on a thread
// of its own and its weights put on the GPU ahead (the first beside the text stage with
// FISDIT_UPLOAD_FIRST_EXPERT=1, the second beside the first one's steps); the video is the one a
// plain load makes, bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "../io/io_test_util.h"
#include "cuda_test_util.h"

#ifdef FISDIT_TEST_HUNYUAN_RELEASE  // the pipeline is built
#include "../pipeline/tiny_release.h"
#include "pipeline/generate.h"
#endif

namespace fisdit {
namespace {

#ifdef FISDIT_TEST_HUNYUAN_RELEASE
int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
#endif

TEST(CudaWanGenerate, ExpertsPutOnTheGpuAheadMakeTheSameVideo) {
  FISDIT_REQUIRE_GPU();
  (void)gpu;
#ifndef FISDIT_TEST_HUNYUAN_RELEASE
  GTEST_SKIP() << "built without the pipeline";
#else
  // --device cuda reaches the backend through the registry, as the fisdit binary fills it.
  register_cuda_backend(&make_cuda_backend, &cuda_device_count);
  iotest::TempDir dir;
  pipeline::tiny_release::make_release(dir.path() / "t2v", "t2v");
  pipeline::GenerateOptions o;
  o.model = (dir.path() / "t2v").string();
  o.prompt = "a red square moves left on a blue background";
  o.width = 32;
  o.height = 32;
  o.frames = 17;
  o.steps = 4;  // shift 5: two steps on each expert
  o.shift = 5.0;
  o.seed = 7;
  o.device = "cuda";
  o.progress = true;  // the loaded lines say what went up ahead
  const auto run = [&](const char* overlap, const char* first, std::string& log) {
    test::EnvScope env("FISDIT_OVERLAP_LOAD", overlap);
    test::EnvScope first_env("FISDIT_UPLOAD_FIRST_EXPERT", first);
    testing::internal::CaptureStderr();
    pipeline::GenerateResult r = pipeline::generate(o);
    log = testing::internal::GetCapturedStderr();
    return r;
  };
  std::string plain_log, ahead_log, second_log;
  const pipeline::GenerateResult plain = run("0", "0", plain_log);
  const pipeline::GenerateResult ahead = run("1", "1", ahead_log);
  const pipeline::GenerateResult second = run("1", "0", second_log);
  EXPECT_FALSE(plain.summary.at("overlap_load").get<bool>());
  EXPECT_TRUE(ahead.summary.at("overlap_load").get<bool>());
  ASSERT_EQ(ahead.latent.shape(), plain.latent.shape());
  EXPECT_EQ(std::memcmp(ahead.latent.raw(), plain.latent.raw(), plain.latent.nbytes()), 0);
  ASSERT_EQ(ahead.video.shape(), plain.video.shape());
  EXPECT_EQ(std::memcmp(ahead.video.raw(), plain.video.raw(), plain.video.nbytes()), 0);
  EXPECT_EQ(std::memcmp(second.latent.raw(), plain.latent.raw(), plain.latent.nbytes()), 0);
  // Both experts went up ahead (the tiny ones fit many times over): the first beside the text
  // stage (FISDIT_UPLOAD_FIRST_EXPERT=1), the second beside the first one's steps; without the
  // variable only the second; nothing with the overlap off.
  EXPECT_EQ(count(ahead_log, "reading its weights and putting them on the GPU"), 1) << ahead_log;
  EXPECT_EQ(count(ahead_log, "of it on the GPU ahead"), 2) << ahead_log;
  EXPECT_EQ(count(second_log, "putting them on the GPU"), 0) << second_log;
  EXPECT_EQ(count(second_log, "of it on the GPU ahead"), 1) << second_log;
  EXPECT_EQ(count(plain_log, "on the GPU"), 0) << plain_log;
#endif
}

}  // namespace
}  // namespace fisdit
