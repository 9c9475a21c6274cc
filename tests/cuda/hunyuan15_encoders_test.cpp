// HunyuanVideo 1.5's encoders on the CUDA backend: the text encoder (the Qwen2.5-VL language
// model) with its causal grouped-query attention against the CPU reference, and the text and
// image (SigLIP) encoders against the official fp32 outputs (tests/data/hunyuan15/text_tiny,
// vision_tiny). The GPU keeps bf16 weights and
// activations with an fp32 residual stream, norms and softmax, as the umT5 encoder does, so the
// encoder is held to the same 2e-2 rel L2 (the fixture's weights are bf16 values already) and the
// op to 1e-2 (bf16 output of fp32 arithmetic on bf16 inputs).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "models/hunyuan15/glyph.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit {
namespace {

using test::gpu_err;
using test::poisoned;
using test::randn;
using test::round_bf16;

struct CausalCase {
  int64_t len, heads, kv_heads, hd;
};

class CudaCausalAttention : public ::testing::TestWithParam<CausalCase> {};

TEST_P(CudaCausalAttention, MatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  const CausalCase c = GetParam();
  auto cpu = make_cpu_backend();
  const Tensor q = round_bf16(randn({c.len, c.heads, c.hd}, 1, 0.5f));
  const Tensor k = round_bf16(randn({c.len, c.kv_heads, c.hd}, 2, 0.5f));
  const Tensor v = round_bf16(randn({c.len, c.kv_heads, c.hd}, 3));
  Tensor ref = Tensor::zeros({c.len, c.heads, c.hd});
  cpu->causal_attention(q, k, v, ref);
  Tensor od = poisoned(gpu, {c.len, c.heads, c.hd}, DType::BF16);
  gpu.causal_attention(gpu.upload(q, DType::BF16), gpu.upload(k, DType::BF16),
                       gpu.upload(v, DType::BF16), od);
  const double err = gpu_err(gpu, od, ref);
  std::printf("causal_attention L=%lld heads=%lld/%lld d=%lld rel L2 %.3g\n",
              static_cast<long long>(c.len), static_cast<long long>(c.heads),
              static_cast<long long>(c.kv_heads), static_cast<long long>(c.hd), err);
  EXPECT_LE(err, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaCausalAttention,
                         ::testing::Values(CausalCase{1, 2, 1, 16}, CausalCase{77, 4, 2, 16},
                                           CausalCase{300, 7, 1, 128},
                                           CausalCase{1100, 4, 4, 128}));

TEST(CudaQwenTextEncoder, MatchesTheOfficialTextEncoder) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/hunyuan15/text_tiny.safetensors";
  const auto fixture = SafetensorsFile::open(path);
  const auto meta = nlohmann::json::parse(fixture->metadata().at("config"))["fixture"];
  const int64_t crop = meta["crop_start"].get<int64_t>();
  auto enc = hunyuan15::load_qwen_text(hunyuan15::open_qwen_text(path), gpu);
  enc->set_resident(true);
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const std::string name = "case" + std::to_string(i);
    const Tensor ids_t = fixture->tensor(name + ".ids");
    std::vector<int32_t> ids(static_cast<size_t>(ids_t.numel()));
    for (size_t j = 0; j < ids.size(); ++j)
      ids[j] = static_cast<int32_t>(ids_t.data_as<int64_t>()[j]);
    const Tensor out = enc->encode(ids);
    const double err =
        rel_l2(out.slice_rows(crop, out.dim(0)).clone(), fixture->tensor_f32(name + ".hidden"));
    std::printf("hunyuan15 text encoder %s on CUDA: rel L2 %.3g vs official fp32\n", name.c_str(),
                err);
    EXPECT_LE(err, 2e-2) << name;
  }
}

TEST(CudaSiglip, MatchesTheOfficialVisionEncoder) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/hunyuan15/vision_tiny.safetensors";
  const auto fixture = SafetensorsFile::open(path);
  auto enc = hunyuan15::load_siglip(hunyuan15::open_siglip(path), gpu);
  const double err = rel_l2(enc->encode(fixture->tensor_f32("input.pixel_values")),
                            fixture->tensor_f32("expected.last_hidden_state"));
  std::printf("hunyuan15 SigLIP on CUDA: rel L2 %.3g vs official fp32\n", err);
  EXPECT_LE(err, 2e-2);
}

TEST(CudaGlyph, MatchesTheOfficialByT5) {
  FISDIT_REQUIRE_GPU();
  const std::string dir = std::string(FISDIT_TEST_DATA) + "/hunyuan15/glyph_tiny";
  const auto f = SafetensorsFile::open(dir + "/expected.safetensors");
  const auto meta = nlohmann::json::parse(f->metadata().at("config"))["fixture"];
  hunyuan15::GlyphEncoder enc(dir, gpu, meta["max_length"].get<int64_t>());
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const Tensor want = f->tensor_f32("case" + std::to_string(i) + ".byt5");
    if (want.dim(0) == 0) continue;
    const double err = rel_l2(enc.encode(meta["cases"][i]["prompt"].get<std::string>()), want);
    std::printf("hunyuan15 glyph case%zu on CUDA: rel L2 %.3g vs official fp32\n", i, err);
    EXPECT_LE(err, 2e-2);
  }
}

}  // namespace
}  // namespace fisdit
