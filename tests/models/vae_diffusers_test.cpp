// The diffusers AutoencoderKLWan names: a copy of the VAE fixtures renamed by
// tools/fixtures/make_diffusers_vae.py's name map (tests/data/wan/<fixture>.diffusers.json,
// written from diffusers' convert_wan_to_diffusers.py rules) must load and encode / decode
// bit-identically to the official names.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "../io/io_test_util.h"
#include "io/safetensors.h"
#include "models/wan/vae.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;
using iotest::TempDir;

std::string fixture_path(const std::string& name) {
  return std::string(FISDIT_TEST_DATA) + "/wan/" + name + ".safetensors";
}

nlohmann::json name_map(const std::string& name) {
  std::ifstream in(std::string(FISDIT_TEST_DATA) + "/wan/" + name + ".diffusers.json");
  return nlohmann::json::parse(in);
}

// dir/diffusion_pytorch_model.safetensors (+ config.json unless !with_config) with the fixture's
// weights under the map's diffusers names; `extra` tensors are added, `drop` left out.
void write_diffusers(const std::string& name, const fs::path& dir, bool with_config = true,
                     const NamedTensors& extra = {}, const std::string& drop = "") {
  const nlohmann::json m = name_map(name);
  const auto f = SafetensorsFile::open(fixture_path(name));
  NamedTensors out;
  for (const auto& [official, diffusers] : m.at("names").items())
    if (diffusers != drop) out.emplace_back(diffusers, f->tensor_f32("model." + official));
  for (const auto& e : extra) out.push_back(e);
  fs::create_directories(dir);
  write_safetensors((dir / "diffusion_pytorch_model.safetensors").string(), out);
  if (with_config) std::ofstream(dir / "config.json") << m.at("config").dump(1);
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class VaeDiffusers : public ::testing::TestWithParam<const char*> {};

TEST_P(VaeDiffusers, EncodeDecodeAreBitIdenticalToTheOfficialNames) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "vae";
  write_diffusers(GetParam(), dir);
  const wan::VaeSource off = wan::open_vae(fixture_path(GetParam()));
  for (const std::string& path :
       {dir.string(), (dir / "diffusion_pytorch_model.safetensors").string()}) {
    SCOPED_TRACE(path);
    const wan::VaeSource d = wan::open_vae(path);
    EXPECT_TRUE(d.diffusers);
    EXPECT_EQ(d.config_origin, "config.json");
    EXPECT_EQ(d.config.version, off.config.version);
    EXPECT_EQ(d.config.dim, off.config.dim);
    EXPECT_EQ(d.config.decoder_dim(), off.config.decoder_dim());
    EXPECT_EQ(d.config.z_dim, off.config.z_dim);
    EXPECT_EQ(d.config.num_res_blocks, off.config.num_res_blocks);
    EXPECT_EQ(d.config.dim_mult, off.config.dim_mult);
    EXPECT_EQ(d.config.temperal_downsample, off.config.temperal_downsample);
    const auto f = SafetensorsFile::open(fixture_path(GetParam()));
    const Tensor video = f->tensor_f32("input.video"), z = f->tensor_f32("input.z");
    const Tensor v = video.reshape({video.dim(1), video.dim(2), video.dim(3), video.dim(4)});
    const Tensor zz = z.reshape({z.dim(1), z.dim(2), z.dim(3), z.dim(4)});
    auto a = wan::load_vae(off), b = wan::load_vae(d);
    EXPECT_TRUE(same(a->encode(v), b->encode(v)));
    EXPECT_TRUE(same(a->decode(zz), b->decode(zz)));
  }
}

TEST_P(VaeDiffusers, LoaderNamesEqualTheConversionScriptNames) {
  const wan::VaeSource off = wan::open_vae(fixture_path(GetParam()));
  const nlohmann::json m = name_map(GetParam());
  ASSERT_GT(m.at("names").size(), 100u);
  for (const auto& [official, diffusers] : m.at("names").items())
    EXPECT_EQ(wan::diffusers_vae_key(official, off.config), diffusers.get<std::string>());
  EXPECT_NE(error_of([&] {
              wan::diffusers_vae_key("encoder.bogus.weight", off.config);
            }).find("'encoder.bogus.weight'"),
            std::string::npos);
}

TEST_P(VaeDiffusers, ConfigLatentStatsAreTheReleasedOnes) {
  // The latents_mean / latents_std diffusers ships equal the official wrappers' constants.
  TempDir tmp;
  write_diffusers(GetParam(), tmp.path());
  const wan::VaeSource d = wan::open_vae(tmp.path().string());
  const wan::LatentStats want =
      d.config.z_dim == 48 ? wan::wan22_latent_stats() : wan::wan21_latent_stats();
  EXPECT_EQ(d.stats.mean, want.mean);
  EXPECT_EQ(d.stats.std, want.std);
}

TEST_P(VaeDiffusers, WithoutConfigTheShapesGiveTheSameModel) {
  TempDir tmp;
  write_diffusers(GetParam(), tmp.path(), /*with_config=*/false);
  const wan::VaeSource off = wan::open_vae(fixture_path(GetParam()));
  const wan::VaeSource d = wan::open_vae(tmp.path().string());
  EXPECT_EQ(d.config_origin, "tensor shapes");
  EXPECT_EQ(d.config.version, off.config.version);
  EXPECT_EQ(d.config.dim, off.config.dim);
  EXPECT_EQ(d.config.decoder_dim(), off.config.decoder_dim());
  EXPECT_EQ(d.config.z_dim, off.config.z_dim);
  EXPECT_EQ(d.config.num_res_blocks, off.config.num_res_blocks);
  EXPECT_NO_THROW(wan::load_vae(d));
}

TEST_P(VaeDiffusers, ExtraOrMissingTensorsAreNamed) {
  TempDir tmp;
  write_diffusers(GetParam(), tmp.path() / "extra", true,
                  {{"decoder.up_blocks.9.resnets.0.norm1.gamma", Tensor::zeros({4, 1, 1, 1})}});
  std::string e = error_of([&] { wan::load_vae(wan::open_vae((tmp.path() / "extra").string())); });
  EXPECT_NE(e.find("'decoder.up_blocks.9.resnets.0.norm1.gamma'"), std::string::npos) << e;
  write_diffusers(GetParam(), tmp.path() / "missing", true, {},
                  "decoder.mid_block.attentions.0.proj.weight");
  e = error_of([&] { wan::load_vae(wan::open_vae((tmp.path() / "missing").string())); });
  EXPECT_NE(e.find("missing VAE tensor 'decoder.mid_block.attentions.0.proj.weight'"),
            std::string::npos)
      << e;
}

INSTANTIATE_TEST_SUITE_P(Wan, VaeDiffusers, ::testing::Values("vae21_tiny", "vae22_tiny"));

TEST(VaeDiffusersConfig, BadFieldsAreNamed) {
  wan::VaeConfig c;
  wan::LatentStats s;
  nlohmann::json j = name_map("vae21_tiny").at("config");
  j["patch_size"] = 2;
  EXPECT_NE(error_of([&] { wan::diffusers_vae_config(j, "cfg.json", c, s); }).find("patch_size"),
            std::string::npos);
  j = name_map("vae22_tiny").at("config");
  j["in_channels"] = 3;
  EXPECT_NE(error_of([&] { wan::diffusers_vae_config(j, "cfg.json", c, s); }).find("in_channels"),
            std::string::npos);
  j = name_map("vae21_tiny").at("config");
  j["latents_std"] = {1.0, 2.0};
  EXPECT_NE(error_of([&] { wan::diffusers_vae_config(j, "cfg.json", c, s); }).find("latents_std"),
            std::string::npos);
  j = name_map("vae21_tiny").at("config");
  j["_class_name"] = "AutoencoderKL";
  EXPECT_NE(error_of([&] { wan::diffusers_vae_config(j, "cfg.json", c, s); }).find("_class_name"),
            std::string::npos);
}

}  // namespace
}  // namespace fisdit
