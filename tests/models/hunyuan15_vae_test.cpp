// The HunyuanVideo 1.5 VAE on the CPU backend against the official code's outputs
// (tests/data/hunyuan15/vae_tiny.safetensors, tools/fixtures/gen_hunyuan15_vae_fixture.py):
// encode (moments and the posterior's mode) and decode of the tiny model.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/hunyuan15/vae.h"

namespace fisdit {
namespace {

// fp32 arithmetic in any summation order stays far below this (the Wan VAE fixtures' bound).
constexpr double kFp32Tolerance = 1e-5;

struct Loaded {
  std::shared_ptr<SafetensorsFile> file =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/hunyuan15/vae_tiny.safetensors");
  std::unique_ptr<Backend> backend = make_cpu_backend();
  std::unique_ptr<hunyuan15::HunyuanVae> vae;
  Loaded() {
    const hunyuan15::VaeConfig cfg = hunyuan15::vae_config_from_json(
        nlohmann::json::parse(file->metadata().at("config")).at("constructor"), "fixture metadata");
    vae = std::make_unique<hunyuan15::HunyuanVae>(
        cfg,
        [&](const std::string& name, const Shape& shape) {
          const Tensor t = file->tensor_f32("model." + name);
          EXPECT_EQ(t.shape(), shape) << name;
          return t;
        },
        *backend);
  }
};

TEST(HunyuanVae, EncodeMatchesTheOfficialCode) {
  Loaded m;
  Tensor moments;
  const Tensor mean = m.vae->encode(m.file->tensor_f32("input.video"), &moments);
  const double e1 = rel_l2(moments, m.file->tensor_f32("expected.moments"));
  const double e2 = rel_l2(mean, m.file->tensor_f32("expected.mean"));
  std::printf("encode: moments rel L2 %.3g, mean %.3g\n", e1, e2);
  EXPECT_LE(e1, kFp32Tolerance);
  EXPECT_LE(e2, kFp32Tolerance);
}

TEST(HunyuanVae, DecodeMatchesTheOfficialCode) {
  Loaded m;
  const Tensor video = m.vae->decode(m.file->tensor_f32("input.z"));
  const double err = rel_l2(video, m.file->tensor_f32("expected.video"));
  std::printf("decode: rel L2 %.3g\n", err);
  EXPECT_LE(err, kFp32Tolerance);
}

// The pipeline's spatially tiled decode: tiles decoded alone, blended in place in the official
// order, cropped and joined.
TEST(HunyuanVae, TiledDecodeMatchesTheOfficialCode) {
  Loaded m;
  std::vector<std::pair<int, int>> tiles;
  const Tensor video =
      m.vae->decode(m.file->tensor_f32("input.z_tiled"), hunyuan15::VaeTiling{true, 32, 0.5},
                    [&](int done, int total) { tiles.emplace_back(done, total); });
  // A 3x4 latent in tiles of 2 cells every cell: 3 rows of 4 tiles, each reported once.
  ASSERT_EQ(tiles.size(), 12u);
  for (size_t i = 0; i < tiles.size(); ++i)
    EXPECT_EQ(tiles[i], (std::pair<int, int>(static_cast<int>(i) + 1, 12)));
  const Tensor expected = m.file->tensor_f32("expected.video_tiled");
  ASSERT_EQ(video.shape(), expected.shape());
  const double err = rel_l2(video, expected);
  std::printf("tiled decode: rel L2 %.3g\n", err);
  EXPECT_LE(err, kFp32Tolerance);
  // Untiled, the same latent decodes differently (the tiles see less context).
  EXPECT_GT(rel_l2(m.vae->decode(m.file->tensor_f32("input.z_tiled")), expected), 1e-3);
}

// --vae sources: the fixture file itself (official names under "model.", config in its
// metadata) and the same weights converted by diffusers' own script (a directory with diffusers'
// config.json), each decoding and encoding as the official code does.
TEST(HunyuanVae, OfficialAndDiffusersSourcesLoad) {
  Loaded m;
  const std::string dir = std::string(FISDIT_TEST_DATA) + "/hunyuan15/";
  EXPECT_FALSE(hunyuan15::is_hunyuan_vae(dir + "../wan/vae21_tiny.safetensors"));
  EXPECT_EQ(hunyuan15::vae_diffusers_name("decoder.up.2.block.1.conv2.conv.weight"),
            "decoder.up_blocks.2.resnets.1.conv2.conv.weight");
  EXPECT_EQ(hunyuan15::vae_diffusers_name("encoder.mid.attn_1.q.bias"),
            "encoder.mid_block.attentions.0.to_q.bias");
  for (const std::string& path : {dir + "vae_tiny.safetensors", dir + "vae_tiny_diffusers"}) {
    ASSERT_TRUE(hunyuan15::is_hunyuan_vae(path)) << path;
    const hunyuan15::VaeSource src = hunyuan15::open_vae(path);
    EXPECT_EQ(src.diffusers, path.find("diffusers") != std::string::npos);
    EXPECT_EQ(src.config.block_out_channels, (std::vector<int>{8, 8, 16, 16, 16}));
    hunyuan15::HunyuanVae vae(src.config, src.weights, *m.backend);
    EXPECT_LE(
        rel_l2(vae.decode(m.file->tensor_f32("input.z")), m.file->tensor_f32("expected.video")),
        kFp32Tolerance)
        << path;
    EXPECT_LE(
        rel_l2(vae.encode(m.file->tensor_f32("input.video")), m.file->tensor_f32("expected.mean")),
        kFp32Tolerance)
        << path;
  }
}

TEST(HunyuanVae, BadShapesAreClearErrors) {
  Loaded m;
  std::string e = iotest::error_of([&] { m.vae->encode(Tensor::zeros({3, 8, 32, 32})); });
  EXPECT_NE(e.find("4k+1 frames"), std::string::npos) << e;
  e = iotest::error_of([&] { m.vae->encode(Tensor::zeros({3, 9, 40, 32})); });
  EXPECT_NE(e.find("multiples of 16"), std::string::npos) << e;
  e = iotest::error_of([&] { m.vae->decode(Tensor::zeros({5, 2, 2, 2})); });
  EXPECT_NE(e.find("[4, T, h, w]"), std::string::npos) << e;
  nlohmann::json bad = {{"block_out_channels", {8, 8, 16}}, {"latent_channels", 4}};
  e = iotest::error_of([&] { hunyuan15::vae_config_from_json(bad, "config.json"); });
  EXPECT_NE(e.find("more levels"), std::string::npos) << e;
}

}  // namespace
}  // namespace fisdit
