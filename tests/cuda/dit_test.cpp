// The whole Wan DiT on the CUDA backend (bf16 weights and activations, fp32 residual stream):
// against the official fp32 outputs of every fixture, and with FIS against the CPU backend
// running the same plan. Bound 2e-2 rel L2: bf16 storage of weights and activations through 4
// blocks (measured errors are printed).
#include <cstdio>
#include <cstring>
#include <thread>

#include "../models/fp8_scaled.h"
#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "models/wan/loader.h"

namespace fisdit {
namespace {

constexpr double kDitTolerance = 2e-2;

struct Fixture {
  const char* file;
  bool has_y;
};

struct ModelRun {
  std::unique_ptr<wan::WanDiT> dit;
  Tensor text;
};

// The model of `src` (with `loras` merged) on `backend`, and the fixture's text embedded by it.
ModelRun load(Backend& backend, const wan::ModelSource& src, const SafetensorsFile& f,
              const std::vector<LoraSpec>& loras = {}) {
  ModelRun r;
  r.dit = wan::load_dit(src, backend, loras);
  r.text = r.dit->embed_text(f.tensor_f32("input.context"));
  return r;
}
ModelRun load(Backend& backend, const std::string& path, const SafetensorsFile& f) {
  return load(backend, wan::open_model(path), f);
}

Tensor forward(Backend& backend, ModelRun& r, const SafetensorsFile& f, bool has_y,
               const accel::FisPlan* plan) {
  Tensor x = backend.upload(f.tensor_f32("input.x"), DType::F32);
  if (has_y)
    x = models::concat_channels(backend, x, backend.upload(f.tensor_f32("input.y"), DType::F32));
  return backend.download(r.dit->forward(x, f.tensor_f32("input.t"), r.text, plan, true));
}

accel::FisConfig custom(int stride, accel::Granularity g, accel::Reconstruct rec) {
  accel::FisConfig c;
  c.name = "custom";
  c.stride = stride;
  c.head = 1;
  c.tail = 1;
  c.granularity = g;
  c.reconstruct = rec;
  return c;
}

class CudaDit : public ::testing::TestWithParam<Fixture> {};

TEST_P(CudaDit, DenseMatchesTheOfficialOutput) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/" + GetParam().file;
  const auto f = SafetensorsFile::open(path);
  ModelRun r = load(gpu, path, *f);
  gpu.flops().reset();
  const Tensor out = forward(gpu, r, *f, GetParam().has_y, nullptr);
  const Tensor expected = f->tensor_f32("expected.out");
  const double err = rel_l2(out, expected);
  std::printf("%s dense: rel L2 %.3g vs official fp32\n", GetParam().file, err);
  EXPECT_LE(err, kDitTolerance);
  auto cpu = make_cpu_backend();
  ModelRun rc = load(*cpu, path, *f);
  cpu->flops().reset();
  forward(*cpu, rc, *f, GetParam().has_y, nullptr);
  EXPECT_DOUBLE_EQ(gpu.flops().total(), cpu->flops().total()) << "executed FLOPs differ";
}

TEST_P(CudaDit, FisMatchesTheCpuOnTheSamePlan) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/" + GetParam().file;
  const auto f = SafetensorsFile::open(path);
  auto cpu = make_cpu_backend();
  ModelRun rg = load(gpu, path, *f), rc = load(*cpu, path, *f);
  const int frames = static_cast<int>(f->tensor_f32("input.x").dim(1));
  const accel::FisConfig configs[] = {
      accel::fis_preset("balanced"), accel::fis_preset("fast"),
      custom(2, accel::Granularity::Module, accel::Reconstruct::Linear),
      custom(3, accel::Granularity::Block, accel::Reconstruct::Linear),
      custom(3, accel::Granularity::Block, accel::Reconstruct::Delta)};
  for (const auto& cfg : configs) {
    const accel::FisPlan plan(cfg, rg.dit->config().num_layers, 1, frames);
    const Tensor got = forward(gpu, rg, *f, GetParam().has_y, &plan);
    const Tensor want = forward(*cpu, rc, *f, GetParam().has_y, &plan);
    const double err = rel_l2(got, want);
    std::printf("%s fis %s: rel L2 %.3g vs CPU on the same plan\n", GetParam().file,
                cfg.describe().c_str(), err);
    EXPECT_LE(err, kDitTolerance) << cfg.describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaDit,
                         ::testing::Values(Fixture{"dit_t2v_tiny.safetensors", false},
                                           Fixture{"dit_ti2v_tiny.safetensors", false},
                                           Fixture{"dit_i2v_tiny.safetensors", true}),
                         [](const auto& info) {
                           std::string n = info.param.file;
                           return n.substr(4, n.find("_tiny") - 4);
                         });

// A LoRA is merged on the GPU (fp32, before the bf16 conversion): the forward matches the CPU's
// host merge as closely as the dense model does, and the LoRA does change it.
TEST(CudaDitLora, MergedOnTheGpuMatchesTheHostMerge) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  const auto f = SafetensorsFile::open(path);
  const wan::ModelSource src = wan::open_model(path);
  const int64_t d = src.config.dim, ffn = src.config.ffn_dim, r = 4;
  const std::string lora = ::testing::TempDir() + "/fisdit_cuda_lora.safetensors";
  write_safetensors(
      lora,
      {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", test::randn({r, d}, 1, 0.3f)},
       {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", test::randn({d, r}, 2, 0.3f)},
       {"diffusion_model.blocks.0.self_attn.q.alpha", Tensor::from_vector({2.0f}, {})},
       {"diffusion_model.blocks.1.ffn.0.lora_down.weight", test::randn({r, d}, 3, 0.3f)},
       {"diffusion_model.blocks.1.ffn.0.lora_up.weight", test::randn({ffn, r}, 4, 0.3f)},
       {"diffusion_model.blocks.1.self_attn.o.diff_b", test::randn({d}, 5, 0.3f)}});
  auto cpu = make_cpu_backend();
  const auto run = [&](Backend& backend, bool with_lora) {
    ModelRun m = load(backend, src, *f,
                      with_lora ? std::vector<LoraSpec>{{lora, 0.8f}} : std::vector<LoraSpec>{});
    return forward(backend, m, *f, false, nullptr);
  };
  const Tensor gpu_lora = run(gpu, true), cpu_lora = run(*cpu, true), gpu_plain = run(gpu, false);
  const double err = rel_l2(gpu_lora, cpu_lora), effect = rel_l2(gpu_plain, gpu_lora);
  std::printf(
      "LoRA on the GPU vs the CPU merge: rel L2 %.3g (the LoRA changes the output by %.3g)\n", err,
      effect);
  EXPECT_LE(err, kDitTolerance);
  EXPECT_GT(effect, 5 * kDitTolerance);
}

// A ComfyUI scaled-fp8 file (model.diffusion_model. keys, block matrices F8_E4M3 with a
// scale_weight each): the GPU dequantises them straight to bf16; its forward matches the CPU's
// (fp32 dequantisation) from the same file, with and without a LoRA on an fp8 matrix.
TEST(CudaDitFp8, ScaledFp8FileMatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  const auto f = SafetensorsFile::open(path);
  const std::string fp8 = ::testing::TempDir() + "/fisdit_cuda_fp8_dit.safetensors";
  fp8test::write_scaled_dit(path, fp8);
  const wan::ModelSource src = wan::open_model(fp8);
  ASSERT_EQ(src.checkpoint.find("model.diffusion_model.blocks.0.ffn.0.weight")->dtype,
            DType::F8_E4M3);
  const int64_t d = src.config.dim, r = 4;
  const std::string lora = ::testing::TempDir() + "/fisdit_cuda_fp8_lora.safetensors";
  write_safetensors(
      lora, {{"diffusion_model.blocks.0.ffn.0.lora_down.weight", test::randn({r, d}, 6, 0.3f)},
             {"diffusion_model.blocks.0.ffn.0.lora_up.weight",
              test::randn({src.config.ffn_dim, r}, 7, 0.3f)}});
  auto cpu = make_cpu_backend();
  for (const bool with_lora : {false, true}) {
    const auto run = [&](Backend& backend) {
      ModelRun m = load(backend, src, *f,
                        with_lora ? std::vector<LoraSpec>{{lora, 1.0f}} : std::vector<LoraSpec>{});
      return forward(backend, m, *f, false, nullptr);
    };
    const double err = rel_l2(run(gpu), run(*cpu));
    std::printf("scaled fp8 DiT%s: GPU vs CPU rel L2 %.3g\n", with_lora ? " + LoRA" : "", err);
    EXPECT_LE(err, kDitTolerance) << with_lora;
    // --precision fp8: the matrices as stored (or merged and quantized, with the LoRA) on both;
    // the activations' quantization differs between bf16 and fp32 inputs (bound and reason:
    // tests/cuda/fp8_test.cpp, WanDitMatchesTheCpuFp8Forward).
    test::Fp8AttentionKernelScope fp8_attention("cudnn");  // fp8, not the measured choice
    const auto run_fp8 = [&](Backend& backend) {
      auto dit = wan::load_dit(
          src, backend, with_lora ? std::vector<LoraSpec>{{lora, 1.0f}} : std::vector<LoraSpec>{},
          models::Precision::Fp8);
      return backend.download(dit->forward(backend.upload(f->tensor_f32("input.x"), DType::F32),
                                           f->tensor_f32("input.t"),
                                           dit->embed_text(f->tensor_f32("input.context"))));
    };
    const double err8 = rel_l2(run_fp8(gpu), run_fp8(*cpu));
    std::printf("scaled fp8 DiT%s, --precision fp8: GPU vs CPU rel L2 %.3g\n",
                with_lora ? " + LoRA" : "", err8);
    EXPECT_LE(err8, 0.06) << with_lora;
  }
}

// A load made ahead with its weights put on the GPU (stage_dit with an upload, what fisdit generate
// does for the second expert beside the first one's steps) gives the same model bit for bit: with
// a LoRA, from a scaled-fp8 file, in bf16 and --precision fp8; staged on a thread while this one
// runs forwards; and with a reserve that leaves no room, nothing goes up.
TEST(CudaDitStaged, WeightsPutOnTheGpuAheadLoadTheSameModel) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  const auto f = SafetensorsFile::open(path);
  const std::string fp8_file = ::testing::TempDir() + "/fisdit_cuda_staged_fp8.safetensors";
  fp8test::write_scaled_dit(path, fp8_file);
  const wan::ModelSource plain_src = wan::open_model(path), fp8_src = wan::open_model(fp8_file);
  const int64_t d = plain_src.config.dim, ffn = plain_src.config.ffn_dim, r = 4;
  const std::string lora = ::testing::TempDir() + "/fisdit_cuda_staged_lora.safetensors";
  write_safetensors(
      lora,
      {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", test::randn({r, d}, 11, 0.3f)},
       {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", test::randn({d, r}, 12, 0.3f)},
       {"diffusion_model.blocks.1.ffn.0.lora_down.weight", test::randn({r, d}, 13, 0.3f)},
       {"diffusion_model.blocks.1.ffn.0.lora_up.weight", test::randn({ffn, r}, 14, 0.3f)}});
  const std::vector<LoraSpec> loras = {{lora, 0.8f}};
  test::Fp8AttentionKernelScope fp8_attention("cudnn");  // one way on every call
  const Tensor x = gpu.upload(f->tensor_f32("input.x"), DType::F32);
  const auto run = [&](wan::WanDiT& dit) {
    return gpu.download(
        dit.forward(x, f->tensor_f32("input.t"), dit.embed_text(f->tensor_f32("input.context"))));
  };
  const auto same = [](const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
  };
  for (const wan::ModelSource* src : {&plain_src, &fp8_src})
    for (const models::Precision precision : {models::Precision::Default, models::Precision::Fp8}) {
      SCOPED_TRACE(std::string(src == &fp8_src ? "scaled fp8 file" : "bf16 file") +
                   (precision == models::Precision::Fp8 ? ", --precision fp8" : ""));
      const Tensor expected = run(*wan::load_dit(*src, gpu, loras, precision));
      ASSERT_TRUE(same(run(*wan::load_dit(*src, gpu, loras, precision)), expected))
          << "two loads of one model give two outputs: the comparison below would mean nothing";
      // Staged on a thread while this one runs the model: the uploads beside the ops.
      auto running = wan::load_dit(*src, gpu, loras, precision);
      wan::StagedDit staged;
      std::thread stager([&] {
        staged =
            wan::stage_dit(*src, Device::CUDA, loras, precision, int64_t{1} << 40, {}, {&gpu, 0});
      });
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(same(run(*running), expected)) << i;
      stager.join();
      EXPECT_GT(staged.device_bytes, 0);
      EXPECT_EQ(staged.on_device.size() + staged.host.size(),
                wan::dit_parameter_shapes(src->config).size());
      EXPECT_TRUE(same(run(*wan::load_dit(*src, gpu, loras, precision, &staged)), expected));
      EXPECT_TRUE(staged.on_device.empty()) << "every weight put on the GPU is used";
      // No room beside the reserve: nothing goes up, the bytes are read, the model the same.
      wan::StagedDit full = wan::stage_dit(*src, Device::CUDA, loras, precision, int64_t{1} << 40,
                                           {}, {&gpu, int64_t{1} << 50});
      EXPECT_EQ(full.device_bytes, 0);
      EXPECT_TRUE(full.on_device.empty());
      EXPECT_GT(full.bytes, 0);
      EXPECT_TRUE(same(run(*wan::load_dit(*src, gpu, loras, precision, &full)), expected));
    }
}

// head_dim 128 (the real models' value) on a random-weight model, CPU vs CUDA, with FIS.
TEST(CudaDitRandom, HeadDim128MatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  wan::WanConfig cfg;
  cfg.dim = 256;
  cfg.ffn_dim = 512;
  cfg.num_heads = 2;
  cfg.num_layers = 3;
  cfg.text_len = 40;
  cfg.text_dim = 64;
  auto weights = [&](const std::string& name, const Shape& shape) {
    uint64_t seed = std::hash<std::string>{}(name);
    const bool vec = shape.size() == 1 || name.find("modulation") != std::string::npos;
    const float fan_in = shape.size() >= 2 ? static_cast<float>(shape_numel(shape) / shape[0]) : 1;
    if (name.find("norm") != std::string::npos) return test::randn(shape, seed, 0.1f, 1.0f);
    return test::randn(shape, seed, vec ? 0.1f : 1.0f / std::sqrt(fan_in));
  };
  auto cpu = make_cpu_backend();
  wan::WanDiT dg(cfg, gpu, weights), dc(cfg, *cpu, weights);
  const Tensor context = test::randn({13, cfg.text_dim}, 5);
  const Tensor tg = dg.embed_text(context), tc = dc.embed_text(context);
  const Tensor x = test::randn({16, 7, 12, 16}, 6);
  const Tensor t = Tensor::from_vector({730.0f}, {1});
  const accel::FisPlan plan(custom(3, accel::Granularity::Module, accel::Reconstruct::Linear),
                            cfg.num_layers, 1, 7);
  for (const accel::FisPlan* p : {static_cast<const accel::FisPlan*>(nullptr), &plan}) {
    const Tensor got = gpu.download(dg.forward(gpu.upload(x, DType::F32), t, tg, p, true));
    const Tensor want = cpu->download(dc.forward(x, t, tc, p, true));
    const double err = rel_l2(got, want);
    std::printf("random head_dim 128 %s: rel L2 %.3g vs CPU\n", p ? "fis" : "dense", err);
    EXPECT_LE(err, kDitTolerance);
  }
}

// MagCache's hooks on the GPU: the kept block-stack residual and a forward that applies it
// instead of the blocks, both against the CPU doing the same.
TEST(CudaDitMagCache, KeptAndAppliedResidualMatchTheCpu) {
  FISDIT_REQUIRE_GPU();
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  const auto f = SafetensorsFile::open(path);
  auto cpu = make_cpu_backend();
  ModelRun rg = load(gpu, path, *f), rc = load(*cpu, path, *f);
  const Tensor x = f->tensor_f32("input.x");
  const Tensor xg = gpu.upload(x, DType::F32);
  const Tensor t = f->tensor_f32("input.t"), t2 = Tensor::from_vector({600.0f}, {1});
  Tensor res_g, res_c;
  rg.dit->forward(xg, t, rg.text, nullptr, true, {}, {nullptr, &res_g});
  rc.dit->forward(x, t, rc.text, nullptr, true, {}, {nullptr, &res_c});
  const double err_res = rel_l2(gpu.download(res_g), res_c);
  const Tensor got = gpu.download(rg.dit->forward(xg, t2, rg.text, nullptr, true, {}, {&res_g}));
  const Tensor want = rc.dit->forward(x, t2, rc.text, nullptr, true, {}, {&res_c});
  const double err_out = rel_l2(got, want);
  std::printf("magcache residual: rel L2 %.3g, applied forward: rel L2 %.3g vs CPU\n", err_res,
              err_out);
  EXPECT_LE(err_res, kDitTolerance);
  EXPECT_LE(err_out, kDitTolerance);
}

}  // namespace
}  // namespace fisdit
