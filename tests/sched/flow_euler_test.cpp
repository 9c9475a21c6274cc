// Flow-matching Euler sampling (Lightning 4-step recipe), expert switch and CFG.
#include <gtest/gtest.h>

#include <cstring>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/loader.h"
#include "sched/denoise.h"
#include "sched/flow_euler.h"

namespace fisdit::sched {
namespace {

TEST(EulerSchedule, ShiftedSigmasOfTheFourStepRecipe) {
  const EulerSchedule s = flow_euler_schedule(4, 5.0f);
  // u = 1, .75, .5, .25, 0 -> sigma = 5u / (1 + 4u)
  const float expect[] = {1.0f, 0.9375f, 2.5f / 3.0f, 0.625f, 0.0f};
  ASSERT_EQ(s.sigmas.size(), 5u);
  for (int k = 0; k < 5; ++k) EXPECT_FLOAT_EQ(s.sigmas[k], expect[k]);
  ASSERT_EQ(s.timesteps.size(), 4u);
  for (int k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(s.timesteps[k], expect[k] * 1000.0f);
  const EulerSchedule unshifted = flow_euler_schedule(8, 1.0f);
  for (int k = 0; k <= 8; ++k) EXPECT_FLOAT_EQ(unshifted.sigmas[k], 1.0f - k / 8.0f);
  EXPECT_THROW(flow_euler_schedule(0, 5.0f), Error);
  EXPECT_THROW(flow_euler_schedule(4, 0.0f), Error);
}

TEST(EulerSchedule, HighNoiseExpertWhileTimestepAtOrAboveBoundary) {
  const EulerSchedule s = flow_euler_schedule(4, 5.0f);  // 1000, 937.5, 833.3, 625
  EXPECT_TRUE(use_high_noise_expert(s.timesteps[0], 0.875f));
  EXPECT_TRUE(use_high_noise_expert(s.timesteps[1], 0.875f));
  EXPECT_FALSE(use_high_noise_expert(s.timesteps[2], 0.875f));
  EXPECT_TRUE(use_high_noise_expert(875.0f, 0.875f));  // >= is inclusive
  EXPECT_FALSE(use_high_noise_expert(899.9f, 0.9f));
}

struct Fixture {
  std::unique_ptr<Backend> be = make_cpu_backend();
  std::shared_ptr<SafetensorsFile> file =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors");
  std::unique_ptr<wan::WanDiT> dit = wan::load_dit(wan::open_model(file->path()), *be);
};

TEST(Denoise, EqualsTheHandWrittenEulerLoopWithGuidance) {
  Fixture f;
  DenoiseInputs in{f.file->tensor_f32("input.x"), f.file->tensor_f32("input.context"), {}, {}, {}};
  Tensor neg = in.context.states.clone();
  for (int64_t i = 0; i < neg.numel(); ++i) neg.f32()[i] *= -0.5f;
  in.context_neg = neg;
  DenoiseOptions opt;
  opt.steps = 2;
  opt.shift = 3.0f;
  opt.guidance = 2.5f;
  const Tensor got = denoise(*f.dit, nullptr, in, opt);

  // By hand: x += (sigma' - sigma) * (u + g (c - u)).
  const EulerSchedule s = flow_euler_schedule(2, 3.0f);
  const Tensor cond = f.dit->embed_text(in.context.states), uncond = f.dit->embed_text(neg);
  std::vector<float> x = in.x.to_vector();
  for (int k = 0; k < 2; ++k) {
    const Tensor xt = Tensor::from_vector(x, in.x.shape());
    const Tensor t = Tensor::from_vector({s.timesteps[k]}, {1});
    const auto c = f.be->download(f.dit->forward(xt, t, cond)).to_vector();
    const auto u = f.be->download(f.dit->forward(xt, t, uncond)).to_vector();
    for (size_t i = 0; i < x.size(); ++i)
      x[i] += (s.sigmas[k + 1] - s.sigmas[k]) * (u[i] + 2.5f * (c[i] - u[i]));
  }
  EXPECT_LE(rel_l2(got, Tensor::from_vector(x, in.x.shape())), 1e-6);
}

TEST(Denoise, SwitchesExpertsAtTheBoundaryAndGatesFisOnTheLastStep) {
  Fixture f;
  auto low = wan::load_dit(wan::open_model(f.file->path()), *f.be);
  DenoiseInputs in{f.file->tensor_f32("input.x"), f.file->tensor_f32("input.context"), {}, {}, {}};
  DenoiseOptions opt;
  opt.fis = accel::fis_preset("balanced");
  std::vector<StepInfo> steps;
  denoise(*f.dit, low.get(), in, opt, [&](const StepInfo& s) { steps.push_back(s); });
  ASSERT_EQ(steps.size(), 4u);
  const bool high[] = {true, true, false, false};
  const bool sparse[] = {true, true, true, false};  // dense_last_steps = 1
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(steps[k].high_noise_expert, high[k]) << k;
    EXPECT_EQ(steps[k].fis_step_open, sparse[k]) << k;
  }
}

TEST(Denoise, ClearErrorsForMissingInputs) {
  Fixture f;
  DenoiseInputs in{f.file->tensor_f32("input.x"), f.file->tensor_f32("input.context"), {}, {}, {}};
  DenoiseOptions opt;
  opt.guidance = 3.0f;  // no context_neg
  EXPECT_THROW(denoise(*f.dit, nullptr, in, opt), Error);
  opt.guidance = 1.0f;
  in.y = in.x;  // y on a t2v model
  EXPECT_THROW(denoise(*f.dit, nullptr, in, opt), Error);
}

}  // namespace
}  // namespace fisdit::sched
