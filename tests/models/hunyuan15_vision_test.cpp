// HunyuanVideo 1.5's image encoder (SigLIP) on the CPU backend against the official
// VisionEncoder's output (tests/data/hunyuan15/vision_tiny.safetensors,
// tools/fixtures/gen_hunyuan15_vision_fixture.py), and its input errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit {
namespace {

std::string vision_fixture() {
  return std::string(FISDIT_TEST_DATA) + "/hunyuan15/vision_tiny.safetensors";
}

TEST(Siglip, MatchesTheOfficialVisionEncoder) {
  const auto fixture = SafetensorsFile::open(vision_fixture());
  auto backend = make_cpu_backend();
  const hunyuan15::SiglipSource src = hunyuan15::open_siglip(vision_fixture());
  EXPECT_EQ(src.prefix, "vision_model.");
  EXPECT_EQ(src.config_origin, "file metadata");
  EXPECT_EQ(src.config.tokens(), 16);
  auto enc = hunyuan15::load_siglip(src, *backend);
  std::map<std::string, Tensor> seen;
  const Tensor out =
      enc->encode(fixture->tensor_f32("input.pixel_values"),
                  [&](const std::string& n, const Tensor& t) { seen[n] = t.clone(); });
  const double err = rel_l2(out, fixture->tensor_f32("expected.last_hidden_state"));
  std::printf("hunyuan15 SigLIP: rel L2 %.3g\n", err);
  EXPECT_LE(err, 1e-5);
  EXPECT_LE(rel_l2(seen.at("embedding"), fixture->tensor_f32("expected.hidden_0")), 1e-5);
  // transformers 4.57.1 records the last layer's entry of hidden_states after the post layer
  // norm (it equals last_hidden_state there), so the layers before it are compared.
  for (int l = 0; l + 1 < src.config.layers; ++l)
    EXPECT_LE(rel_l2(seen.at("layer_" + std::to_string(l)),
                     fixture->tensor_f32("expected.hidden_" + std::to_string(l + 1))),
              1e-5)
        << l;
}

// 384 is not a multiple of 14: the convolution never reads the last rows and columns. The same
// weights with image_size 60 (4 patches of 14 and 4 pixels over) give the fixture's output for an
// image whose top-left 56x56 are the fixture's pixels.
TEST(Siglip, PixelsPastTheLastPatchAreNotRead) {
  const auto fixture = SafetensorsFile::open(vision_fixture());
  auto backend = make_cpu_backend();
  hunyuan15::SiglipSource src = hunyuan15::open_siglip(vision_fixture());
  src.config.image_size = 60;
  auto enc = hunyuan15::load_siglip(src, *backend);
  const Tensor px = fixture->tensor_f32("input.pixel_values");
  Tensor big = Tensor::zeros({3, 60, 60});
  for (int64_t i = 0; i < big.numel(); ++i) big.f32()[i] = 0.9f;  // never read
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 56; ++y)
      for (int64_t x = 0; x < 56; ++x)
        big.f32()[(c * 60 + y) * 60 + x] = px.f32()[(c * 56 + y) * 56 + x];
  EXPECT_LE(rel_l2(enc->encode(big), fixture->tensor_f32("expected.last_hidden_state")), 1e-5);
}

TEST(Siglip, BadInputIsAClearError) {
  auto backend = make_cpu_backend();
  auto enc = hunyuan15::load_siglip(hunyuan15::open_siglip(vision_fixture()), *backend);
  std::string e = iotest::error_of([&] { enc->encode(Tensor::zeros({3, 64, 56})); });
  EXPECT_NE(e.find("expects pixels [3, 56, 56]"), std::string::npos) << e;
  const std::string text = std::string(FISDIT_TEST_DATA) + "/hunyuan15/text_tiny.safetensors";
  EXPECT_FALSE(hunyuan15::find_siglip(text).has_value());
  e = iotest::error_of([&] { hunyuan15::open_siglip(text); });
  EXPECT_NE(e.find("no SigLIP image encoder"), std::string::npos) << e;
  nlohmann::json bad = {{"hidden_size", 64}, {"image_size", 10}, {"patch_size", 14}};
  e = iotest::error_of([&] { hunyuan15::siglip_config_from_json(bad, "config.json"); });
  EXPECT_NE(e.find("must hold a patch"), std::string::npos) << e;
  // The released config.json keys (a whole SigLIP config keeps them under vision_config).
  const auto c = hunyuan15::siglip_config_from_json(
      {{"vision_config", {{"hidden_size", 1152}, {"num_hidden_layers", 27}}}}, "config.json");
  EXPECT_EQ(c.tokens(), 729);
  EXPECT_EQ(c.head_dim(), 72);
}

}  // namespace
}  // namespace fisdit
