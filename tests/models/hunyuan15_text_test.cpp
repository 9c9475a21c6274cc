// HunyuanVideo 1.5's text encoder (the Qwen2.5-VL language model) on the CPU backend against the
// official TextEncoder's outputs (tests/data/hunyuan15/text_tiny.safetensors,
// tools/fixtures/gen_hunyuan15_text_fixture.py), the causal grouped-query attention it runs, and
// its input errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/hunyuan15/text_encoder.h"
#include "random_tensor.h"

namespace fisdit {
namespace {

constexpr double kFp32Tolerance = 1e-5;

std::string text_fixture() {
  return std::string(FISDIT_TEST_DATA) + "/hunyuan15/text_tiny.safetensors";
}

std::vector<int32_t> ids_of(const SafetensorsFile& f, const std::string& name) {
  const Tensor t = f.tensor(name);
  std::vector<int32_t> ids(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(t.data_as<int64_t>()[i]);
  return ids;
}

using iotest::error_of;

// Query i of head h against keys 0..i of key/value head h / group, through the unmasked
// attention op: the same numbers the causal op must give.
TEST(CausalAttention, EqualsAttentionOverEachPrefixWithSharedKeyValueHeads) {
  auto be = make_cpu_backend();
  const int64_t len = 23, heads = 6, kv_heads = 2, d = 16, group = heads / kv_heads;
  const Tensor q = modeltest::random_tensor({len, heads, d}, 1, 1.0f),
               k = modeltest::random_tensor({len, kv_heads, d}, 2, 1.0f),
               v = modeltest::random_tensor({len, kv_heads, d}, 3, 1.0f);
  Tensor out = Tensor::zeros({len, heads, d});
  be->causal_attention(q, k, v, out);
  double worst = 0;
  for (int64_t i = 0; i < len; ++i) {
    // q_i with every head; k, v of rows 0..i with their heads repeated group times.
    Tensor qi = Tensor::zeros({1, heads, d}), ki = Tensor::zeros({i + 1, heads, d}),
           vi = Tensor::zeros({i + 1, heads, d}), oi = Tensor::zeros({1, heads, d});
    std::copy(q.f32() + i * heads * d, q.f32() + (i + 1) * heads * d, qi.f32());
    for (int64_t j = 0; j <= i; ++j)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < d; ++c) {
          ki.f32()[(j * heads + h) * d + c] = k.f32()[(j * kv_heads + h / group) * d + c];
          vi.f32()[(j * heads + h) * d + c] = v.f32()[(j * kv_heads + h / group) * d + c];
        }
    be->attention(qi, ki, vi, oi);
    for (int64_t c = 0; c < heads * d; ++c)
      worst = std::max(worst,
                       static_cast<double>(std::abs(oi.f32()[c] - out.f32()[i * heads * d + c])));
  }
  EXPECT_LE(worst, 1e-6);
  // The first query sees only itself: its output is v_0 of its key/value head.
  for (int64_t h = 0; h < heads; ++h) EXPECT_NEAR(out.f32()[h * d], v.f32()[(h / group) * d], 1e-6);
}

TEST(CausalAttention, BadShapesAreClearErrors) {
  auto be = make_cpu_backend();
  Tensor q = Tensor::zeros({4, 6, 8}), out = Tensor::zeros({4, 6, 8});
  const Tensor k4 = Tensor::zeros({4, 4, 8});
  std::string e = error_of([&] { be->causal_attention(q, k4, k4, out); });
  EXPECT_NE(e.find("multiple of the key/value heads"), std::string::npos) << e;
  const Tensor k3 = Tensor::zeros({3, 2, 8});
  e = error_of([&] { be->causal_attention(q, k3, k3, out); });
  EXPECT_NE(e.find("shapes do not agree"), std::string::npos) << e;
}

TEST(QwenTextEncoder, MatchesTheOfficialTextEncoder) {
  const auto fixture = SafetensorsFile::open(text_fixture());
  const auto meta = nlohmann::json::parse(fixture->metadata().at("config"));
  const int64_t crop = meta["fixture"]["crop_start"].get<int64_t>();
  auto backend = make_cpu_backend();
  const hunyuan15::QwenTextSource src = hunyuan15::open_qwen_text(text_fixture());
  EXPECT_EQ(src.prefix, "model.");
  EXPECT_EQ(src.config_origin, "file metadata");
  EXPECT_EQ(src.config.layers, 4);
  EXPECT_EQ(src.config.kv_heads, 2);
  auto enc = hunyuan15::load_qwen_text(src, *backend);
  const size_t cases = meta["fixture"]["cases"].size();
  ASSERT_GE(cases, 4u);
  for (size_t i = 0; i < cases; ++i) {
    const std::string name = "case" + std::to_string(i);
    std::map<std::string, Tensor> seen;
    const Tensor out =
        enc->encode(ids_of(*fixture, name + ".ids"),
                    [&](const std::string& n, const Tensor& t) { seen[n] = t.clone(); });
    const Tensor cropped = out.slice_rows(crop, out.dim(0)).clone();
    const Tensor expected = fixture->tensor_f32(name + ".hidden");
    ASSERT_EQ(cropped.shape(), expected.shape()) << name;
    const double err = rel_l2(cropped, expected);
    std::printf("hunyuan15 text encoder %s (%lld tokens): rel L2 %.3g\n", name.c_str(),
                static_cast<long long>(out.dim(0)), err);
    EXPECT_LE(err, kFp32Tolerance) << name;
    for (int l = 0; l < src.config.layers_run(); ++l) {
      const std::string hook = name + ".layer_" + std::to_string(l);
      if (!fixture->contains(hook)) continue;
      EXPECT_LE(rel_l2(seen.at("layer_" + std::to_string(l)), fixture->tensor_f32(hook)),
                kFp32Tolerance)
          << hook;
    }
  }
}

TEST(QwenTextEncoder, ResidentLayersGiveTheSameBits) {
  const auto fixture = SafetensorsFile::open(text_fixture());
  auto backend = make_cpu_backend();
  auto enc = hunyuan15::load_qwen_text(hunyuan15::open_qwen_text(text_fixture()), *backend);
  const std::vector<int32_t> ids = ids_of(*fixture, "case0.ids");
  const Tensor streamed = enc->encode(ids);
  enc->set_resident(true);
  const Tensor first = enc->encode(ids), second = enc->encode(ids);
  EXPECT_EQ(rel_l2(first, streamed), 0.0);
  EXPECT_EQ(rel_l2(second, streamed), 0.0);
}

TEST(QwenTextEncoder, BadInputIsAClearError) {
  auto backend = make_cpu_backend();
  auto enc = hunyuan15::load_qwen_text(hunyuan15::open_qwen_text(text_fixture()), *backend);
  std::string e = error_of([&] { enc->encode({1, 2, 720}); });
  EXPECT_NE(e.find("token 2 has id 720"), std::string::npos) << e;
  e = error_of([&] { enc->encode({}); });
  EXPECT_NE(e.find("no tokens"), std::string::npos) << e;
  // A DiT checkpoint is not a text encoder.
  const std::string dit = std::string(FISDIT_TEST_DATA) + "/hunyuan15/dit_tiny.safetensors";
  e = error_of([&] { hunyuan15::open_qwen_text(dit); });
  EXPECT_NE(e.find("no Qwen2.5-VL language model"), std::string::npos) << e;
  EXPECT_NE(e.find(dit), std::string::npos) << e;
  // A layer's tensor missing: named.
  const auto fixture = SafetensorsFile::open(text_fixture());
  NamedTensors kept;
  for (const TensorInfo& t : fixture->tensors())
    if (t.name.rfind("model.", 0) == 0 && t.name != "model.layers.1.mlp.up_proj.weight")
      kept.emplace_back(t.name, fixture->tensor(t.name));
  const std::string cut =
      (std::filesystem::temp_directory_path() / "fisdit_text_cut.safetensors").string();
  write_safetensors(cut, kept, fixture->metadata());
  e = error_of([&] { hunyuan15::load_qwen_text(hunyuan15::open_qwen_text(cut), *backend); });
  EXPECT_NE(e.find("'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("is missing"), std::string::npos) << e;
  std::filesystem::remove(cut);
  // Heads that do not divide.
  nlohmann::json bad = {
      {"hidden_size", 64}, {"num_attention_heads", 4}, {"num_key_value_heads", 3}};
  e = error_of([&] { hunyuan15::qwen_text_config_from_json(bad, "config.json"); });
  EXPECT_NE(e.find("num_key_value_heads"), std::string::npos) << e;
}

TEST(QwenTextEncoder, ConfigJsonNestedOrFlat) {
  nlohmann::json flat = {{"hidden_size", 3584},
                         {"num_hidden_layers", 28},
                         {"rope_theta", 1e6},
                         {"num_key_value_heads", 4},
                         {"vision_config", {{"depth", 32}}}};
  const auto a = hunyuan15::qwen_text_config_from_json(flat, "config.json");
  EXPECT_EQ(a.hidden, 3584);
  EXPECT_EQ(a.head_dim(), 128);
  EXPECT_EQ(a.layers_run(), 26);
  nlohmann::json nested = {{"text_config",
                            {{"hidden_size", 2048},
                             {"num_attention_heads", 16},
                             {"num_key_value_heads", 2},
                             {"rope_parameters", {{"rope_theta", 5e5}}}}}};
  const auto b = hunyuan15::qwen_text_config_from_json(nested, "config.json");
  EXPECT_EQ(b.hidden, 2048);
  EXPECT_EQ(b.heads, 16);
  EXPECT_EQ(b.rope_theta, 5e5);
}

}  // namespace
}  // namespace fisdit
