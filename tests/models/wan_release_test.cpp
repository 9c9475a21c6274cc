// Locating the parts of a Wan release in the layouts users download.
#include "models/wan/release.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "../io/io_test_util.h"

namespace fisdit::wan {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::param_of;
using iotest::TempDir;
namespace fs = std::filesystem;

void touch(const fs::path& p) {
  fs::create_directories(p.parent_path());
  iotest::write_bytes(p.string(), "x");
}

void official_a14b(const fs::path& root, bool with_low = true) {
  touch(root / "high_noise_model/config.json");
  touch(root / "high_noise_model/diffusion_pytorch_model.safetensors.index.json");
  if (with_low) {
    touch(root / "low_noise_model/config.json");
    touch(root / "low_noise_model/diffusion_pytorch_model-00001-of-00006.safetensors");
  }
  touch(root / "models_t5_umt5-xxl-enc-bf16.pth");
  touch(root / "Wan2.1_VAE.pth");
  touch(root / "google/umt5-xxl/spiece.model");
}

TEST(Release, OfficialA14B) {
  TempDir dir;
  official_a14b(dir.path());
  const ReleasePaths r = resolve_release(dir.path().string());
  EXPECT_EQ(r.layout, "official");
  EXPECT_EQ(r.dit, (dir.path() / "high_noise_model").string());
  EXPECT_EQ(r.dit_low, (dir.path() / "low_noise_model").string());
  EXPECT_EQ(r.text_encoder, (dir.path() / "models_t5_umt5-xxl-enc-bf16.pth").string());
  EXPECT_EQ(r.vae, (dir.path() / "Wan2.1_VAE.pth").string());
  EXPECT_EQ(r.tokenizer, (dir.path() / "google/umt5-xxl").string());
}

TEST(Release, OfficialTi2vSingleExpertPrefersTheWan22Vae) {
  TempDir dir;
  touch(dir.path() / "config.json");
  touch(dir.path() / "diffusion_pytorch_model-00001-of-00003.safetensors");
  touch(dir.path() / "models_t5_umt5-xxl-enc-bf16.pth");
  touch(dir.path() / "Wan2.2_VAE.pth");
  touch(dir.path() / "Wan2.1_VAE.pth");
  touch(dir.path() / "google/umt5-xxl/spiece.model");
  const ReleasePaths r = resolve_release(dir.path().string());
  EXPECT_EQ(r.dit, dir.path().string());
  EXPECT_TRUE(r.dit_low.empty());
  EXPECT_EQ(r.vae, (dir.path() / "Wan2.2_VAE.pth").string());
}

TEST(Release, MissingExpertSaysWhatToDo) {
  TempDir dir;
  official_a14b(dir.path(), /*with_low=*/false);
  const std::string msg = error_of([&] { resolve_release(dir.path().string()); });
  EXPECT_TRUE(contains(msg, "low_noise_model/ is missing"));
  EXPECT_EQ(param_of([&] { resolve_release(dir.path().string()); }), "dit_low");
  // The flag supplies it.
  ReleaseOverrides o;
  o.dit_low = "elsewhere/low";
  EXPECT_EQ(resolve_release(dir.path().string(), o).dit_low, "elsewhere/low");
}

TEST(Release, Diffusers) {
  TempDir dir;
  iotest::write_bytes(dir.file("model_index.json"),
                      R"({"_class_name": "WanPipeline", "boundary_ratio": 0.875,
                          "transformer": ["diffusers", "WanTransformer3DModel"],
                          "transformer_2": ["diffusers", "WanTransformer3DModel"]})");
  touch(dir.path() / "transformer/diffusion_pytorch_model.safetensors");
  touch(dir.path() / "transformer_2/diffusion_pytorch_model.safetensors");
  touch(dir.path() / "text_encoder/model.safetensors");
  touch(dir.path() / "tokenizer/spiece.model");
  touch(dir.path() / "vae/diffusion_pytorch_model.safetensors");
  const ReleasePaths r = resolve_release(dir.path().string());
  EXPECT_EQ(r.layout, "diffusers");
  EXPECT_EQ(r.dit_low, (dir.path() / "transformer_2").string());
  ASSERT_TRUE(r.boundary.has_value());
  EXPECT_DOUBLE_EQ(*r.boundary, 0.875);
  EXPECT_EQ(r.tokenizer, (dir.path() / "tokenizer").string());

  fs::remove_all(dir.path() / "transformer_2");
  EXPECT_TRUE(contains(error_of([&] { resolve_release(dir.path().string()); }), "transformer_2"));
}

TEST(Release, SingleFileNeedsTheOtherParts) {
  TempDir dir;
  touch(dir.path() / "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors");
  const std::string file = dir.file("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors");
  EXPECT_EQ(param_of([&] { resolve_release(file); }), "text_encoder");
  EXPECT_TRUE(contains(error_of([&] { resolve_release(file); }), "umT5 encoder"));
  ReleaseOverrides o{"", "t5.safetensors", "", ""};
  EXPECT_EQ(param_of([&] { resolve_release(file, o); }), "tokenizer");
  o.tokenizer = "spiece.model";
  EXPECT_EQ(param_of([&] { resolve_release(file, o); }), "vae");
  o.vae = "wan_2.1_vae.safetensors";
  const ReleasePaths r = resolve_release(file, o);
  EXPECT_EQ(r.layout, "single file");
  EXPECT_EQ(r.dit, file);
}

TEST(Release, NoSuchPath) {
  EXPECT_TRUE(contains(error_of([] { resolve_release("/nonexistent/wan"); }),
                       "model /nonexistent/wan: no such file or directory"));
  EXPECT_EQ(param_of([] { resolve_release("/nonexistent/wan"); }), "model");
}

}  // namespace
}  // namespace fisdit::wan
