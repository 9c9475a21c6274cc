// fisdit generate with a HunyuanVideo 1.5 download as a user runs it: the version and its
// official settings filling the flags not given, --compare-dense, the summary and PNG frames, and
// one error line for T2V weights given an image.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../io/io_test_util.h"
#include "../pipeline/tiny_hunyuan15_release.h"
#include "media/image.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string err;
};

Result run(const std::string& args, const fs::path& dir) {
  const std::string err_path = (dir / "stderr.txt").string();
  const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args +
                          " >/dev/null 2>" + err_path;
  const int status = std::system(cmd.c_str());
  std::stringstream ss;
  ss << std::ifstream(err_path).rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(Hunyuan15GenerateCli, RunsTheVersionWithItsOfficialSettings) {
  iotest::TempDir dir;
  const fs::path root = dir.path() / "HunyuanVideo-1.5";
  pipeline::tiny_hunyuan15::make_release(root);
  Tensor rgb = Tensor::zeros({48, 64, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i)
    rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i % 251);
  write_png(dir.file("first.png"), rgb);
  const std::string common = "generate --model " + root.string() + " --device cpu --frames 5";
  Result r =
      run(common + " --image " + dir.file("first.png") +
              " --prompt 'A \"neon\" sign at night' --steps 2 --compare-dense --frames-dir " +
              dir.file("frames") + " --summary-json " + dir.file("s.json"),
          dir.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.err, "settings of HunyuanVideo 1.5 480p_i2v_step_distilled")) << r.err;
  // 848x480 (the version's size) becomes the 480p bucket of the image's 4:3.
  const ImageSize bucket = hunyuan15_video_size(64, 48, 640);
  EXPECT_TRUE(has(r.err, "the release's size for the image's aspect ratio (64x48) is " +
                             std::to_string(bucket.width) + "x" + std::to_string(bucket.height)))
      << r.err;
  EXPECT_TRUE(has(r.err, "times: text")) << r.err;
  std::ifstream in(dir.file("s.json"));
  const nlohmann::json s = nlohmann::json::parse(in);
  EXPECT_EQ(s["family"], "hunyuan15");
  EXPECT_EQ(s["task"], "i2v");
  EXPECT_EQ(s["request"]["steps"], 2);    // the flag
  EXPECT_EQ(s["request"]["shift"], 7.0);  // the version's
  EXPECT_EQ(s["request"]["guidance_high"], 1.0);
  EXPECT_EQ(s["steps"].size(), 2u);
  EXPECT_TRUE(s.contains("fidelity_vs_dense")) << s.dump();
  int frames = 0;
  for (const auto& e : fs::directory_iterator(dir.file("frames"))) frames += e.is_regular_file();
  EXPECT_EQ(frames, 5);

  // MagCache on the same request (no decode needed to see the skipped passes).
  r = run(common + " --image " + dir.file("first.png") +
              " --prompt 'a cat' --steps 4 --cache magcache --magcache-force --save-latent " +
              dir.file("x.st") + " --summary-json " + dir.file("c.json"),
          dir.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ifstream cin(dir.file("c.json"));
  const nlohmann::json c = nlohmann::json::parse(cin);
  int skipped = 0;
  for (const auto& step : c["steps"]) skipped += step["cache_skipped_passes"].get<int>();
  EXPECT_GT(skipped, 0) << c.dump();

  // T2V weights given an image: one error line, naming the flag.
  r = run(common + " --transformer-version 480p_t2v --image " + dir.file("first.png") +
              " --prompt 'a cat' --frames-dir " + dir.file("f2"),
          dir.path());
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(has(r.err, "takes no image")) << r.err;
  // A version that is not there lists the ones that are.
  r = run(
      common + " --transformer-version 720p_i2v --prompt 'a cat' --frames-dir " + dir.file("f2"),
      dir.path());
  EXPECT_NE(r.rc, 0);
  EXPECT_TRUE(has(r.err, "480p_i2v_step_distilled, 480p_t2v")) << r.err;
}

TEST(Hunyuan15GenerateCli, InspectListsADiffusersPipeline) {
  iotest::TempDir dir;
  pipeline::tiny_hunyuan15::make_diffusers_pipeline(dir.path() / "pipe");
  const std::string cmd =
      std::string(FISDIT_CLI_PATH) + " inspect " + (dir.path() / "pipe").string();
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  EXPECT_EQ(pclose(p), 0);
  for (const char* want :
       {"HunyuanVideo 1.5 diffusers pipeline", "transformer: 2 blocks", "diffusers names",
        "Qwen2.5-VL language model", "with tokenizer_2/", "SigLIP, 3 layers"})
    EXPECT_TRUE(has(out, want)) << want << "\n" << out;
  EXPECT_FALSE(has(out, "missing")) << out;
}

}  // namespace
}  // namespace fisdit
