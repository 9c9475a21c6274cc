// The bundled model (models/fisdit-shapes, trained by tools/train): found without --model, its
// fisdit.json defaults, its own VAE latent statistics, and prompts it was trained to follow.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../env_scope.h"
#include "../io/io_test_util.h"
#include "models/wan/vae.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"

namespace fisdit::pipeline {
namespace {

using iotest::contains;
using iotest::TempDir;
namespace fs = std::filesystem;

std::string bundled() { return std::string(FISDIT_DATA_DIR) + "/models/fisdit-shapes"; }

GenerateOptions small(const std::string& prompt, int frames = 5) {
  GenerateOptions o;
  o.model = bundled();
  o.prompt = prompt;
  o.width = 128;
  o.height = 128;
  o.frames = frames;  // 5: 2 latent frames, seconds on the CPU; the model was trained on 33
  o.steps = 4;
  o.shift = 5.0;
  o.seed = 1;
  o.device = "cpu";
  o.progress = false;
  o.fis = accel::fis_preset("off");
  return o;
}

// Mean of each colour channel over the whole video, in [0, 1].
std::array<double, 3> mean_rgb(const Tensor& video) {
  std::array<double, 3> m{};
  const int64_t per = video.numel() / 3;
  const float* p = video.f32();
  for (int c = 0; c < 3; ++c) {
    double s = 0;
    for (int64_t i = 0; i < per; ++i) s += p[c * per + i];
    m[c] = (s / static_cast<double>(per) + 1.0) / 2.0;
  }
  return m;
}

TEST(BundledModel, IsFoundWithoutModelAndCarriesItsDefaults) {
  test::EnvScope no_model("FISDIT_MODEL", nullptr);
  const std::string dir = bundled_model_dir();
  EXPECT_TRUE(fs::equivalent(dir, bundled())) << dir;
  const ModelDefaults d = read_model_defaults(dir);
  EXPECT_EQ(d.name, "fisdit-shapes");
  EXPECT_EQ(d.size.value_or(""), "128x128");
  EXPECT_EQ(d.frames.value_or(0), 33);
  EXPECT_EQ(d.steps.value_or(0), 4);
  EXPECT_EQ(d.held_out_prompts.size(), 8u);
}

// The trained VAE's latent statistics travel in its metadata; generate must decode with them,
// not with Wan 2.1's constants (which give wrong colours for this model).
TEST(BundledModel, DecodesWithTheVaesOwnLatentStatistics) {
  const wan::VaeSource src = wan::open_vae(bundled() + "/Wan2.1_VAE.safetensors");
  const wan::LatentStats wan21 = wan::wan21_latent_stats();
  ASSERT_EQ(src.stats.mean.size(), 16u);
  EXPECT_NE(src.stats.mean, wan21.mean);
  EXPECT_NE(src.stats.std, wan21.std);

  const GenerateResult r = generate(small("a white circle moves left on a blue background"));
  Tensor z = r.latent.clone();
  wan::denormalize_latent(z, src.stats);
  Tensor video = wan::load_vae(src)->decode(z);
  float* p = video.f32();
  for (int64_t i = 0; i < video.numel(); ++i) p[i] = std::clamp(p[i], -1.0f, 1.0f);
  ASSERT_EQ(video.shape(), r.video.shape());
  EXPECT_LT(rel_l2(r.video, video), 1e-6);
}

// What the model learned: the background colour named in the prompt fills most of the frame,
// at the length it was trained for (33 frames).
TEST(BundledModel, FollowsTheBackgroundColourOfThePrompt) {
  const auto blue =
      mean_rgb(generate(small("a white circle moves left on a blue background", 33)).video);
  const auto yellow =
      mean_rgb(generate(small("a black square grows on a yellow background", 33)).video);
  EXPECT_GT(blue[2], blue[0] + 0.3) << blue[0] << " " << blue[1] << " " << blue[2];
  EXPECT_GT(yellow[0], yellow[2] + 0.3) << yellow[0] << " " << yellow[1] << " " << yellow[2];
  EXPECT_GT(yellow[1], yellow[2] + 0.3);
}

// `fisdit generate --prompt ...` alone: the bundled model with its fisdit.json defaults; a flag
// given overrides its default.
TEST(BundledModel, GenerateWithoutModelUsesItAndItsDefaults) {
  TempDir dir;
  test::EnvScope no_model("FISDIT_MODEL", nullptr);
  auto run = [&](const std::string& args, std::string& err) {
    return iotest::run_fisdit("generate " + args + " --device cpu", dir.file("stderr.txt"), err);
  };
  std::string err;
  ASSERT_EQ(
      run("--prompt 'a red square moves right on a gray background' --frames 5 --frames-dir " +
              dir.file("f") + " --summary-json " + dir.file("s.json"),
          err),
      0)
      << err;
  EXPECT_TRUE(contains(err, "the bundled fisdit-shapes")) << err;
  std::ifstream in(dir.file("s.json"));
  const nlohmann::json s = nlohmann::json::parse(in);
  const nlohmann::json& q = s.at("request");
  EXPECT_EQ(q.at("width").get<int>(), 128);
  EXPECT_EQ(q.at("height").get<int>(), 128);
  EXPECT_EQ(q.at("frames").get<int>(), 5);  // given
  EXPECT_EQ(q.at("steps").get<int>(), 4);   // from fisdit.json
  EXPECT_TRUE(contains(s.at("paths").at("dit").get<std::string>(), "fisdit-shapes"));
  EXPECT_TRUE(fs::exists(dir.path() / "f" / "frame_0004.png"));

  ASSERT_EQ(run("--prompt 'a red square' --frames 5 --size 64x64 --steps 2 --frames-dir " +
                    dir.file("g") + " --summary-json " + dir.file("t.json"),
                err),
            0)
      << err;
  std::ifstream in2(dir.file("t.json"));
  const nlohmann::json t = nlohmann::json::parse(in2);
  EXPECT_EQ(t.at("request").at("width").get<int>(), 64);
  EXPECT_EQ(t.at("request").at("steps").get<int>(), 2);

  // analyze without --model and --prompts: the bundled model on its held-out prompts, at its
  // fisdit.json size, and the flags given (frames, steps) win
  ASSERT_EQ(iotest::run_fisdit("analyze --frames 5 --steps 2 --no-figures --device cpu "
                               "--output-dir " +
                                   dir.file("an"),
                               dir.file("stderr.txt"), err),
            0)
      << err;
  std::ifstream ain(dir.file("an") + "/analysis.json");
  const nlohmann::json a = nlohmann::json::parse(ain);
  EXPECT_EQ(a.at("latent"), nlohmann::json::parse("[16, 2, 16, 16]"));
  ASSERT_EQ(a.at("samples").size(), 8u);
  EXPECT_EQ(a.at("samples")[0].get<std::string>(),
            read_model_defaults(bundled()).held_out_prompts[0]);
  EXPECT_EQ(a.at("cv").size(), 2u);  // steps

  {
    test::EnvScope model("FISDIT_MODEL", dir.file("nowhere").c_str());
    EXPECT_NE(run("--prompt 'a red square' --frames-dir " + dir.file("h"), err), 0);
  }
  EXPECT_TRUE(contains(err, "FISDIT_MODEL=" + dir.file("nowhere") + ": not a directory")) << err;
}

}  // namespace
}  // namespace fisdit::pipeline
