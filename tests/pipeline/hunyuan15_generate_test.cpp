// fisdit generate with HunyuanVideo 1.5 (models/hunyuan15/release.h) on a tiny download of the
// official layout: which version runs, the size buckets and the official settings, the first
// frame's condition channels and SigLIP states, T2V's zero condition, CFG, and one clear error
// for each kind of bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "media/image.h"
#include "models/hunyuan15/release.h"
#include "models/hunyuan15/vae.h"
#include "pipeline/generate.h"
#include "tiny_hunyuan15_release.h"

namespace fisdit::pipeline {
namespace {

using iotest::error_of;
using iotest::TempDir;
namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A 4:3 gradient image.
std::string write_image(const TempDir& dir) {
  Tensor rgb = Tensor::zeros({48, 64, 3}, DType::U8);
  uint8_t* p = rgb.data_as<uint8_t>();
  for (int64_t y = 0; y < 48; ++y)
    for (int64_t x = 0; x < 64; ++x)
      for (int64_t c = 0; c < 3; ++c)
        p[(y * 64 + x) * 3 + c] = static_cast<uint8_t>((x * 4 + y * 2 + c * 60) % 256);
  write_png(dir.file("first.png"), rgb);
  return dir.file("first.png");
}

GenerateOptions tiny(const fs::path& root) {
  GenerateOptions o;
  o.model = root.string();
  o.device = "cpu";
  o.prompt = "A cat plays the piano.";
  o.frames = 5;
  o.steps = 2;
  o.shift = 7.0;
  o.width = 848;
  o.height = 480;
  o.progress = false;
  return o;
}

// The DiT inputs of the first step's conditional forward.
struct FirstCall {
  Tensor input;
  int64_t side_rows = -1;
};
sched::ForwardHook record(FirstCall& out) {
  return [&out](const sched::ForwardCall& c) {
    if (c.step == 0 && !out.input.defined()) {
      out.input = c.model->backend().download(*c.input);
      const auto it = c.text->extra.find("side");
      out.side_rows = it == c.text->extra.end() ? 0 : it->second.dim(0);
    }
    return Tensor();
  };
}

TEST(Hunyuan15Release, PicksTheVersionForTheTask) {
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path());
  using hunyuan15::resolve_release;
  models::ReleaseOptions o;
  o.task = models::Task::I2V;
  EXPECT_EQ(resolve_release(dir.path().string(), o).version, "480p_i2v_step_distilled");
  o.task = models::Task::T2V;
  EXPECT_EQ(resolve_release(dir.path().string(), o).version, "480p_t2v");
  // A transformer/<version> folder names its version; the other parts come from its root.
  const hunyuan15::ReleasePaths v =
      resolve_release((dir.path() / "transformer" / "480p_t2v").string(), {});
  EXPECT_EQ(v.version, "480p_t2v");
  EXPECT_EQ(v.layout, "official");
  EXPECT_EQ(fs::path(v.text_encoder), dir.path() / "text_encoder" / "llm");
  o.parts["version"] = "720p_t2v";
  EXPECT_TRUE(contains(error_of([&] { resolve_release(dir.path().string(), o); }),
                       "version 720p_t2v: not in"));
  EXPECT_TRUE(hunyuan15::owns_release(dir.path().string()));
}

TEST(Hunyuan15Release, OfficialSettingsPerVersion) {
  using hunyuan15::version_defaults;
  const models::RequestDefaults step = version_defaults("480p_i2v_step_distilled", true, "480p");
  EXPECT_EQ(step.steps, 8);
  EXPECT_EQ(step.shift, 7.0);
  EXPECT_EQ(step.guidance, 1.0f);
  EXPECT_EQ(step.frames, 121);
  EXPECT_EQ(step.size, "848x480");
  const models::RequestDefaults t2v = version_defaults("480p_t2v", false, "480p");
  EXPECT_EQ(t2v.steps, 50);
  EXPECT_EQ(t2v.shift, 5.0);
  EXPECT_EQ(t2v.guidance, 6.0f);
  EXPECT_EQ(version_defaults("720p_t2v", false, "720p").shift, 9.0);
  EXPECT_EQ(version_defaults("720p_i2v", false, "720p").shift, 7.0);
  EXPECT_EQ(version_defaults("720p_i2v_distilled", false, "720p").guidance, 1.0f);
  EXPECT_EQ(version_defaults("720p_i2v", false, "720p").size, "1280x720");
}

TEST(Hunyuan15Generate, ImageToVideoConditionsOnTheFirstFrame) {
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path());
  GenerateOptions o = tiny(dir.path());
  o.image = write_image(dir);
  o.prompt = "A neon sign reads \"OPEN\" above a door.";
  FirstCall first;
  o.on_forward = record(first);
  const GenerateResult r = generate(o);
  EXPECT_EQ(r.task, models::Task::I2V);
  EXPECT_EQ(r.fps, 24.0);
  // The 4:3 image gets the 480p bucket of that aspect ratio (base 640, stride 16).
  const ImageSize bucket = hunyuan15_video_size(64, 48, 640);
  ASSERT_EQ(r.video.shape(), (Shape{3, 5, bucket.height, bucket.width}));
  for (int64_t i = 0; i < r.video.numel(); ++i) ASSERT_LE(std::fabs(r.video.f32()[i]), 1.0f);
  EXPECT_EQ(r.summary["layout"], "official");
  EXPECT_TRUE(contains(r.summary["paths"]["dit"].get<std::string>(), "480p_i2v_step_distilled"));

  // The DiT's input: latent 4 + condition 4 + mask 1 channels; the condition at frame 0 is the
  // VAE's posterior mode of the fitted first frame times scaling_factor, zero after; the mask 1
  // on frame 0 only.
  ASSERT_TRUE(first.input.defined());
  const int64_t F = first.input.dim(1), plane = first.input.dim(2) * first.input.dim(3);
  ASSERT_EQ(first.input.dim(0), 9);
  ASSERT_EQ(F, 2);
  std::unique_ptr<Backend> cpu = make_backend("cpu");
  const hunyuan15::VaeSource vs = hunyuan15::open_vae(tiny_hunyuan15::data("vae_tiny.safetensors"));
  hunyuan15::HunyuanVae vae(vs.config, vs.weights, *cpu);
  const Tensor fitted =
      resize_and_center_crop_rounded(read_image(o.image), bucket.width, bucket.height);
  const Tensor mode = vae.encode(fitted.clone().reshape({3, 1, fitted.dim(1), fitted.dim(2)}));
  const float* in = first.input.f32();
  double err = 0, ref = 0;
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      const double want = mode.f32()[c * plane + i] * 1.03682;
      err += std::pow(in[((4 + c) * F) * plane + i] - want, 2);
      ref += want * want;
      ASSERT_EQ(in[((4 + c) * F + 1) * plane + i], 0.0f);
    }
  EXPECT_LT(std::sqrt(err / ref), 1e-5);
  for (int64_t i = 0; i < plane; ++i) {
    ASSERT_EQ(in[(8 * F) * plane + i], 1.0f);
    ASSERT_EQ(in[(8 * F + 1) * plane + i], 0.0f);
  }
  // The text side beside the prompt: SigLIP's 16 tokens (56 px in 14 px patches) and the glyph
  // tokens of 'Text "OPEN". ' (13 bytes and </s>).
  EXPECT_EQ(first.side_rows, 16 + 14);
}

TEST(Hunyuan15Generate, TextToVideoWithGuidance) {
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path());
  GenerateOptions o = tiny(dir.path());
  o.width = 1280;
  o.height = 720;  // a 16:9 request: the 480p bucket of 16:9
  o.guidance = 6.0f;
  o.shift = 5.0;
  o.decode = false;  // the decode is the I2V test's (the CPU VAE is the slow stage here)
  FirstCall first;
  o.on_forward = record(first);
  const GenerateResult r = generate(o);
  EXPECT_EQ(r.task, models::Task::T2V);
  ASSERT_EQ(r.latent.shape(), (Shape{4, 2, 30, 53}));  // 848x480: 53x30 cells of 16 pixels
  EXPECT_TRUE(contains(r.summary["paths"]["dit"].get<std::string>(), "480p_t2v"));
  // T2V: the condition and mask channels are all zero, and no vision or glyph token.
  ASSERT_TRUE(first.input.defined());
  const int64_t per_channel = first.input.numel() / 9;
  for (int64_t i = 4 * per_channel; i < first.input.numel(); ++i)
    ASSERT_EQ(first.input.f32()[i], 0.0f);
  EXPECT_EQ(first.side_rows, 0);
  EXPECT_EQ(r.summary["request"]["guidance_high"], 6.0);
  // CFG reads the negative prompt.
  o.on_forward = {};
  o.negative = "blurry, low quality";
  EXPECT_GT(rel_l2(generate(o).latent, r.latent), 1e-4);
}

TEST(Hunyuan15Generate, DiffusersPipelineGivesTheSameVideo) {
  // The same weights in both layouts (diffusers' VAE and glyph encoder names included) give the
  // same latent for the same request.
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path() / "official", {"480p_i2v_step_distilled"});
  tiny_hunyuan15::make_diffusers_pipeline(dir.path() / "diffusers");
  GenerateOptions o = tiny(dir.path() / "official");
  o.image = write_image(dir);
  o.prompt = "A sign that reads \"fisdit\" on a brick wall.";
  o.decode = false;
  const GenerateResult a = generate(o);
  o.model = (dir.path() / "diffusers").string();
  const GenerateResult b = generate(o);
  EXPECT_EQ(b.summary["layout"], "diffusers");
  EXPECT_LT(rel_l2(b.latent, a.latent), 1e-5);
}

TEST(Hunyuan15Generate, BadInputGetsOneClearError) {
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path());
  GenerateOptions o = tiny(dir.path());
  // T2V weights given an image.
  o.parts["version"] = "480p_t2v";
  o.image = write_image(dir);
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "text-to-video model and takes no image"));
  // An image that cannot be read.
  o.parts["version"] = "";
  o.image = dir.file("missing.png");
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "missing.png"));
  o.image = dir.file("first.png");
  {
    std::ofstream(dir.file("broken.png")) << "not a png";
    GenerateOptions b = o;
    b.image = dir.file("broken.png");
    EXPECT_TRUE(contains(error_of([&] { generate(b); }), "broken.png"));
  }
  // Missing encoders: each named as the part it is.
  {
    TempDir bare;
    tiny_hunyuan15::make_release(bare.path(), {"480p_i2v_step_distilled"}, /*vision=*/false,
                                 /*glyph=*/false);
    GenerateOptions b = tiny(bare.path());
    b.image = o.image;
    const std::string e = error_of([&] { generate(b); });
    EXPECT_TRUE(contains(e, "vision_encoder: not in")) << e;
    EXPECT_TRUE(contains(e, "vision_encoder/siglip/")) << e;
    b.parts["vision_encoder"] = (dir.path() / "vision_encoder" / "siglip").string();
    b.prompt = "A sign that says \"HELLO\".";
    const std::string g = error_of([&] { generate(b); });
    EXPECT_TRUE(contains(g, "glyph: the prompt quotes text")) << g;
    fs::remove_all(bare.path() / "text_encoder" / "llm");
    EXPECT_TRUE(contains(error_of([&] { generate(b); }), "text_encoder: not in"));
  }
  // Not a release at all.
  GenerateOptions n = tiny(dir.path() / "vae");
  EXPECT_FALSE(error_of([&] { generate(n); }).empty());
}

TEST(Hunyuan15Generate, ALongPromptIsCutWithAWarning) {
  TempDir dir;
  tiny_hunyuan15::make_release(dir.path(), {"480p_t2v"});
  GenerateOptions o = tiny(dir.path());
  o.frames = 1;
  o.steps = 1;
  o.decode = false;
  o.prompt.clear();
  for (int i = 0; i < 700; ++i) o.prompt += "cat piano ";  // well past 1000 tokens
  testing::internal::CaptureStderr();
  const GenerateResult r = generate(o);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(err, "so the last")) << err;
  EXPECT_EQ(r.summary["prompt_tokens"], 1000);
}

}  // namespace
}  // namespace fisdit::pipeline
