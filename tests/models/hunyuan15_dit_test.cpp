// The HunyuanVideo 1.5 DiT on the CPU backend against the official code's outputs
// (tests/data/hunyuan15/dit_tiny.safetensors, tools/fixtures/gen_hunyuan15_fixtures.py), its FIS
// invariants, its config and checkpoint handling, and its input errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "hunyuan15_fixture.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "models/hunyuan15/family.h"
#include "sched/denoise.h"
#include "sched/flow_euler.h"

namespace fisdit {
namespace {

using iotest::error_of;
using test::Case;
using test::fixture_path;
using test::read_case;

// fp32 arithmetic in any summation order stays far below this (the Wan fixtures' bound). The
// fixture's forward is fp32 with its weights rounded to bf16 first, so the file stores them
// losslessly.
constexpr double kFp32Tolerance = 1e-5;

class HunyuanParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HunyuanParity, EveryHookAndTheOutputMatchTheOfficialCode) {
  const auto fixture = SafetensorsFile::open(fixture_path());
  auto backend = make_cpu_backend();
  const hunyuan15::ModelSource src = hunyuan15::open_model(fixture_path());
  EXPECT_EQ(src.prefix, "model.");
  EXPECT_EQ(src.config_origin, "file metadata");
  auto dit = hunyuan15::load_dit(src, *backend);
  const Case c = read_case(*fixture, GetParam());
  std::map<std::string, Tensor> hooks;
  models::ForwardOptions o;
  o.observer = [&](const std::string& name, const Tensor& t) { hooks[name] = t; };
  const Tensor out = dit->forward(backend->upload(c.x), c.time, dit->embed_text(c.text), o);
  hooks["out"] = backend->download(out);

  const std::string prefix = std::string(GetParam()) + ".expected.";
  int compared = 0;
  double worst = 0;
  for (const TensorInfo& info : fixture->tensors()) {
    if (info.name.rfind(prefix, 0) != 0) continue;
    const std::string name = info.name.substr(prefix.size());
    ASSERT_TRUE(hooks.count(name)) << "no engine value for " << info.name;
    const Tensor expected = fixture->tensor_f32(info.name);
    const Tensor& got = hooks[name];
    ASSERT_EQ(got.numel(), expected.numel()) << name << " " << shape_str(got.shape());
    const double err = rel_l2(got.reshape(expected.shape()), expected);
    EXPECT_LE(err, kFp32Tolerance) << name << " rel L2 " << err;
    worst = std::max(worst, err);
    ++compared;
  }
  // x_embed, vec, txt_refined, context, 2 x (block, txt_block), head_out, out
  EXPECT_EQ(compared, 10);
  std::printf("%s: worst rel L2 %.3g over %d tensors\n", GetParam(), worst, compared);
}

// --precision fp8 on the CPU reference (E4M3 block matrices per output channel, activations per
// token; fp8 adds the joint attention with q, k, v in E4M3): within 0.1 rel. L2 of the official
// fp32 output through 2 blocks, as the Wan fixtures (a matrix multiply in E4M3 is ~3% off, an
// attention ~5%), and not equal to it. fp8-gemm shares the quantized weights.
TEST_P(HunyuanParity, Fp8StaysCloseToTheOfficialOutput) {
  const auto fixture = SafetensorsFile::open(fixture_path());
  auto backend = make_cpu_backend();
  auto dit =
      hunyuan15::load_dit(hunyuan15::open_model(fixture_path()), *backend, models::Precision::Fp8);
  const Case c = read_case(*fixture, GetParam());
  const Tensor expected = fixture->tensor_f32(std::string(GetParam()) + ".expected.out");
  const models::TextEmbedding text = dit->embed_text(c.text);
  const Tensor fp8 = backend->download(dit->forward(backend->upload(c.x), c.time, text, {}));
  dit->set_precision(models::Precision::Fp8Gemm);
  const Tensor gemm = backend->download(dit->forward(backend->upload(c.x), c.time, text, {}));
  const double e8 = rel_l2(fp8, expected), eg = rel_l2(gemm, expected);
  std::printf("%s: fp8 rel L2 %.3g, fp8-gemm %.3g\n", GetParam(), e8, eg);
  EXPECT_LE(e8, 0.1);
  EXPECT_LE(eg, 0.1);
  EXPECT_GT(e8, 1e-4);
  EXPECT_NE(rel_l2(fp8, gemm), 0.0);
  EXPECT_THROW(dit->set_precision(models::Precision::Default), Error);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HunyuanParity, ::testing::Values("i2v", "t2v"));

// The same weights in diffusers' layout (tools/fixtures/gen_hunyuan15_diffusers_fixture.py:
// converted by diffusers' own conversion function, with its config.json): the refiner's q, k, v
// stored apart and the final layer's halves swapped are put back, and the output is the official
// one.
TEST(HunyuanDiffusers, TheConvertedCheckpointGivesTheOfficialOutput) {
  const std::string dir = std::string(FISDIT_TEST_DATA) + "/hunyuan15/dit_tiny_diffusers";
  const auto fixture = SafetensorsFile::open(fixture_path());
  auto backend = make_cpu_backend();
  const hunyuan15::ModelSource src = hunyuan15::open_model(dir);
  EXPECT_EQ(src.layout, hunyuan15::Layout::Diffusers);
  EXPECT_NE(src.config_origin.find("config.json"), std::string::npos);
  EXPECT_TRUE(hunyuan15::check_model(src).empty());
  EXPECT_EQ(hunyuan15::diffusers_name("double_blocks.7.txt_attn_q_norm.weight"),
            "transformer_blocks.7.attn.norm_added_q.weight");
  EXPECT_EQ(hunyuan15::diffusers_name("txt_in.individual_token_refiner.blocks.1.mlp.fc2.bias"),
            "context_embedder.token_refiner.refiner_blocks.1.ff.net.2.bias");
  auto dit = hunyuan15::load_dit(src, *backend);
  for (const char* name : {"i2v", "t2v"}) {
    const Case c = read_case(*fixture, name);
    const Tensor out =
        backend->download(dit->forward(backend->upload(c.x), c.time, dit->embed_text(c.text), {}));
    const double err = rel_l2(out, fixture->tensor_f32(std::string(name) + ".expected.out"));
    EXPECT_LE(err, kFp32Tolerance) << name;
  }
  const std::vector<std::string> lines = models::family_for_model(dir).explain(dir);
  bool layout = false;
  for (const std::string& l : lines) layout |= l == "layout       diffusers";
  EXPECT_TRUE(layout);
}

// The sampler on HunyuanVideo 1.5: the official pipeline's loop with its scheduler (3 Euler steps,
// shift 7, MeanFlow's r = the next timestep, 0 at the last; the condition channels concatenated
// at every step) against sched::denoise with the same noise.
TEST(HunyuanSampling, ThreeEulerStepsMatchTheOfficialLoop) {
  const auto f = SafetensorsFile::open(fixture_path());
  auto backend = make_cpu_backend();
  auto dit = hunyuan15::load_dit(hunyuan15::open_model(fixture_path()), *backend);
  const Case c = read_case(*f, "i2v");
  sched::DenoiseInputs in;
  in.x = f->tensor_f32("sample.input.noise");
  in.y = test::channels(c.x, 4, c.x.dim(0));  // condition latent and mask
  in.context = c.text;
  sched::DenoiseOptions opt;
  opt.steps = 3;
  opt.shift = 7.0;
  std::vector<float> timesteps;
  const Tensor x = sched::denoise(
      *dit, nullptr, in, opt, [&](const sched::StepInfo& s) { timesteps.push_back(s.timestep); });
  const std::vector<float> want = f->tensor_f32("sample.expected.timesteps").to_vector();
  ASSERT_EQ(timesteps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(timesteps[i], want[i], 1e-3) << i;
  const double err = rel_l2(x, f->tensor_f32("sample.expected.x"));
  std::printf("sample: 3 steps, rel L2 %.3g\n", err);
  EXPECT_LE(err, kFp32Tolerance);
}

accel::FisConfig custom_fis(int stride, accel::Granularity g = accel::Granularity::Module,
                            accel::Reconstruct r = accel::Reconstruct::Linear) {
  accel::FisConfig c;
  c.name = "custom";
  c.stride = stride;
  c.granularity = g;
  c.reconstruct = r;
  return c;
}

struct Loaded {
  std::unique_ptr<Backend> backend = make_cpu_backend();
  std::unique_ptr<hunyuan15::HunyuanDiT> dit;
  Case c;
  models::TextEmbedding text;
  Loaded() {
    dit = hunyuan15::load_dit(hunyuan15::open_model(fixture_path()), *backend);
    c = read_case(*SafetensorsFile::open(fixture_path()), "i2v");
    text = dit->embed_text(c.text);
  }
  Tensor run(const accel::FisConfig* fis) {
    std::unique_ptr<accel::FisPlan> plan;
    if (fis) plan = std::make_unique<accel::FisPlan>(*fis, dit->config().num_blocks, 1, c.x.dim(1));
    backend->flops().reset();
    return backend->download(
        dit->forward(backend->upload(c.x), c.time, text, {plan.get(), true, {}, {}}));
  }
};

// FIS.md invariants: stride 1 is bit-identical to dense; a sparse plan runs the video stream on
// the anchor frames only (the engine's FLOPs equal the analytic count of that plan, below the
// dense count) and gives a finite output that differs from dense (how much says nothing on
// random weights and white-noise frames, which FIS does not claim to interpolate).
TEST(HunyuanFis, StrideOneIsDenseAndSparseBlocksRunOnAnchorsOnly) {
  Loaded m;
  const Tensor dense = m.run(nullptr);
  const double dense_flops = m.backend->flops().total();
  const hunyuan15::HunyuanConfig& cfg = m.dit->config();
  const int64_t side = m.text.states.dim(0) + m.text.extra.at("side").dim(0);
  const int64_t f = m.c.x.dim(1), h = m.c.x.dim(2), w = m.c.x.dim(3);
  EXPECT_DOUBLE_EQ(dense_flops, hunyuan15::forward_flops(cfg, f, h, w, m.text.states.dim(0), side,
                                                         nullptr, true));
  const accel::FisConfig one = custom_fis(1);
  const Tensor same = m.run(&one);
  EXPECT_EQ(rel_l2(same, dense), 0.0);

  for (const auto& [g, r] : {std::pair{accel::Granularity::Module, accel::Reconstruct::Linear},
                             std::pair{accel::Granularity::Block, accel::Reconstruct::Linear},
                             std::pair{accel::Granularity::Block, accel::Reconstruct::Delta}}) {
    const accel::FisConfig fis = custom_fis(2, g, r);
    const accel::FisPlan plan(fis, cfg.num_blocks, 1, static_cast<int>(f));
    const Tensor sparse = m.run(&fis);
    EXPECT_DOUBLE_EQ(
        m.backend->flops().total(),
        hunyuan15::forward_flops(cfg, f, h, w, m.text.states.dim(0), side, &plan, true));
    EXPECT_LT(m.backend->flops().total(), dense_flops);
    const double err = rel_l2(sparse, dense);
    EXPECT_GT(err, 0.0) << accel::granularity_name(g);
    EXPECT_TRUE(std::isfinite(err)) << accel::granularity_name(g);
  }
}

TEST(HunyuanConfigTest, PresetsAndConfigFiles) {
  const hunyuan15::HunyuanConfig c =
      hunyuan15::load_config("hunyuanvideo-1.5-480p-i2v-step-distilled");
  EXPECT_TRUE(c.meanflow);
  EXPECT_EQ(c.in_dim(), 65);
  EXPECT_EQ(c.num_blocks, 54);
  const models::ModelInfo info = hunyuan15::model_info(c);
  EXPECT_EQ(info.family, "hunyuan15");
  EXPECT_EQ(info.in_channels, 65);
  EXPECT_EQ(info.latent_channels, 32);
  EXPECT_TRUE(info.meanflow);
  // 480p, 121 frames: 31 x 30 x 53 latent cells (HUNYUAN15.md section 6).
  const models::LatentGrid g = info.latent_grid(848, 480, 121);
  EXPECT_EQ(g.frames * g.height * g.width, 49290);
  // Frame counts must be 4k+1 and sizes multiples of 16: one error naming each.
  std::string e = error_of([&] { info.latent_grid(848, 480, 120); });
  EXPECT_NE(e.find("frames 120: must be 4k+1"), std::string::npos) << e;
  e = error_of([&] { info.latent_grid(850, 480, 121); });
  EXPECT_NE(e.find("multiple of 16"), std::string::npos) << e;
  EXPECT_FALSE(hunyuan15::load_config("hunyuanvideo-1.5-720p-t2v").meanflow);
  EXPECT_EQ(&models::family_for_config("hunyuanvideo-1.5-480p-i2v"),
            &models::family_for_config("hunyuanvideo-1.5-720p-i2v"));
  EXPECT_STREQ(models::family_for_config("hunyuanvideo-1.5-480p-i2v").name, "hunyuan15");

  auto config_error = [](const nlohmann::json& j) {
    return error_of([&] { hunyuan15::config_from_json(j, "config.json"); });
  };
  nlohmann::json j = {{"_class_name", "HunyuanVideo_1_5_DiffusionTransformer"},
                      {"mm_single_blocks_depth", 40}};
  EXPECT_NE(config_error(j).find("single-stream"), std::string::npos) << config_error(j);
  j = {{"mm_double_blocks_depth", 54}, {"text_projection", "linear"}};
  EXPECT_NE(config_error(j).find("single_refiner"), std::string::npos) << config_error(j);
  j = {{"mm_double_blocks_depth", 54}, {"rope_dim_list", {16, 56, 50}}};
  EXPECT_NE(config_error(j).find("rope_dim_list"), std::string::npos) << config_error(j);
  j = {{"_class_name", "WanModel"}};
  EXPECT_NE(config_error(j).find("WanModel"), std::string::npos) << config_error(j);
}

TEST(HunyuanCheckpoint, TheFamilyIsRecognisedAndAWanFileIsNot) {
  EXPECT_STREQ(models::family_for_model(fixture_path()).name, "hunyuan15");
  const models::ModelInfo info = models::probe_model(fixture_path());
  EXPECT_EQ(info.num_blocks, 2);
  EXPECT_EQ(info.in_channels, 9);
  const std::string wan = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  EXPECT_STREQ(models::family_for_model(wan).name, "wan");
  try {
    hunyuan15::open_model(wan);
    ADD_FAILURE() << "a Wan file opened as HunyuanVideo 1.5";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a HunyuanVideo 1.5 DiT"), std::string::npos)
        << e.what();
  }
  const std::vector<std::string> lines =
      models::family_for_model(fixture_path()).explain(fixture_path());
  bool loadable = false;
  for (const std::string& l : lines) loadable |= l.rfind("loadable     yes", 0) == 0;
  EXPECT_TRUE(loadable);
}

TEST(HunyuanInputs, BadInputsAreClearErrors) {
  Loaded m;
  auto contains = [](const std::string& s, const char* what) {
    return s.find(what) != std::string::npos;
  };
  std::string e = error_of([&] {
    m.dit->forward(m.backend->upload(Tensor::zeros({4, 3, 4, 6})), m.c.time, m.text, {});
  });
  EXPECT_TRUE(contains(e, "[9, F, H, W]")) << e;
  e = error_of([&] {
    models::TextContext t(Tensor::zeros({3, 32}));
    m.dit->embed_text(t);
  });
  EXPECT_TRUE(contains(e, "[tokens, 64]")) << e;
  e = error_of([&] {
    models::TextContext t(Tensor::zeros({1001, 64}));
    m.dit->embed_text(t);
  });
  EXPECT_TRUE(contains(e, "1001 tokens")) << e;
  e = error_of([&] {
    models::TextContext t = m.c.text;
    t.extra["glyph"] = Tensor::zeros({1, 40});
    m.dit->embed_text(t);
  });
  EXPECT_TRUE(contains(e, "'glyph'")) << e;
  e = error_of([&] {
    models::TextContext t = m.c.text;
    t.extra["vision"] = Tensor::zeros({2, 47});
    m.dit->embed_text(t);
  });
  EXPECT_TRUE(contains(e, "'vision' states")) << e;
  e = error_of([&] {
    models::Timestep two{Tensor::from_vector({1.0f, 2.0f}, {2}), std::nullopt};
    m.dit->forward(m.backend->upload(m.c.x), two, m.text, {});
  });
  EXPECT_TRUE(contains(e, "one finite value")) << e;
}

// A config name no family knows: one message listing every family's names, said once.
TEST(HunyuanConfig, AnUnknownNameIsOneMessageWithEveryName) {
  std::string e;
  try {
    models::family_for_config("hunyuanvideo-1.5-720p-i2v-step-distilled");
  } catch (const Error& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("unknown model config 'hunyuanvideo-1.5-720p-i2v-step-distilled'"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("wan2.2-t2v-a14b"), std::string::npos) << e;
  EXPECT_NE(e.find("hunyuanvideo-1.5-720p-i2v-distilled"), std::string::npos) << e;
  EXPECT_EQ(e.find("unknown", 1), std::string::npos) << e;  // no repeated per-family reasons
}

}  // namespace
}  // namespace fisdit
