// The HunyuanVideo 1.5 DiT on the CUDA backend (bf16 weights and activations, fp32 residual
// streams) against the official fp32 outputs (tests/data/hunyuan15), and with FIS against the
// CPU backend running the same plan. Bound 2e-2 rel L2, as the Wan DiT's: the fixture's weights
// are bf16 values already, so what remains is bf16 storage of the activations through 2 blocks
// and the refiner (measured errors are printed).
#include <cstdio>

#include "../models/hunyuan15_fixture.h"
#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "models/hunyuan15/family.h"

namespace fisdit {
namespace {

using test::fixture_path;

constexpr double kDitTolerance = 2e-2;

Tensor run(Backend& backend, const std::string& name, const accel::FisConfig* fis,
           models::Precision precision = models::Precision::Default) {
  const auto f = SafetensorsFile::open(fixture_path());
  auto dit = hunyuan15::load_dit(hunyuan15::open_model(fixture_path()), backend, precision);
  const test::Case c = test::read_case(*f, name);
  const Tensor& x = c.x;
  const models::Timestep& time = c.time;
  const models::TextContext& text = c.text;
  std::unique_ptr<accel::FisPlan> plan;
  if (fis)
    plan = std::make_unique<accel::FisPlan>(*fis, dit->config().num_blocks, 1,
                                            static_cast<int>(x.dim(1)));
  backend.flops().reset();
  return backend.download(dit->forward(backend.upload(x, DType::F32), time, dit->embed_text(text),
                                       {plan.get(), true, {}, {}}));
}

class CudaHunyuan : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaHunyuan, DenseMatchesTheOfficialOutput) {
  FISDIT_REQUIRE_GPU();
  const Tensor out = run(gpu, GetParam(), nullptr);
  const double gpu_flops = gpu.flops().total();
  const auto f = SafetensorsFile::open(fixture_path());
  const double err = rel_l2(out, f->tensor_f32(std::string(GetParam()) + ".expected.out"));
  std::printf("hunyuan15 %s dense: rel L2 %.3g vs official fp32\n", GetParam(), err);
  EXPECT_LE(err, kDitTolerance);
  auto cpu = make_cpu_backend();
  run(*cpu, GetParam(), nullptr);
  EXPECT_DOUBLE_EQ(gpu_flops, cpu->flops().total()) << "executed FLOPs differ";
}

TEST_P(CudaHunyuan, FisMatchesTheCpuOnTheSamePlan) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (const auto g : {accel::Granularity::Module, accel::Granularity::Block}) {
    accel::FisConfig fis;
    fis.name = "custom";
    fis.stride = 2;
    fis.granularity = g;
    const Tensor want = run(*cpu, GetParam(), &fis);
    const Tensor got = run(gpu, GetParam(), &fis);
    const double err = rel_l2(got, want);
    std::printf("hunyuan15 %s fis %s: rel L2 %.3g vs CPU\n", GetParam(),
                accel::granularity_name(g).c_str(), err);
    EXPECT_LE(err, kDitTolerance);
  }
}

// --precision fp8 and fp8-gemm on the GPU (cuBLASLt E4M3 GEMMs, cuDNN FP8 attention) against
// the official fp32 output, with the CPU reference's bound (0.1: E4M3 GEMMs ~3%, attention ~5%).
TEST_P(CudaHunyuan, Fp8StaysCloseToTheOfficialOutput) {
  FISDIT_REQUIRE_GPU();
  const auto f = SafetensorsFile::open(fixture_path());
  const Tensor expected = f->tensor_f32(std::string(GetParam()) + ".expected.out");
  test::Fp8AttentionKernelScope fp8_attention("cudnn");  // fp8, not the measured choice
  for (const auto p : {models::Precision::Fp8, models::Precision::Fp8Gemm}) {
    const double err = rel_l2(run(gpu, GetParam(), nullptr, p), expected);
    std::printf("hunyuan15 %s %s: rel L2 %.3g vs official fp32\n", GetParam(),
                models::precision_name(p), err);
    EXPECT_LE(err, 0.1) << models::precision_name(p);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaHunyuan, ::testing::Values("i2v", "t2v"));

}  // namespace
}  // namespace fisdit
