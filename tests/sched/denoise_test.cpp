// The sampling loop with the official solvers: per-expert guidance and TI2V first-frame
// conditioning, each against a loop written out by hand from the DiT and the solver.
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

struct Model {
  explicit Model(const std::string& name)
      : file(SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/" + name)),
        dit(wan::load_dit(wan::open_model(file->path()), *be)) {}
  std::unique_ptr<Backend> be = make_cpu_backend();
  std::shared_ptr<SafetensorsFile> file;
  std::unique_ptr<wan::WanDiT> dit;
};

Tensor negated(const Tensor& t) {
  Tensor n = t.clone();
  for (int64_t i = 0; i < n.numel(); ++i) n.f32()[i] *= -0.5f;
  return n;
}

// v = u + g (c - u), in the order the loop computes it.
std::vector<float> guided(const std::vector<float>& c, const std::vector<float>& u, float g) {
  std::vector<float> v(c.size());
  for (size_t i = 0; i < c.size(); ++i) v[i] = u[i] + g * (c[i] - u[i]);
  return v;
}

// The official per-step guidance by hand: A14B style, high scale while t >= 875.
std::vector<float> hand_loop_t2v(Model& m, const DenoiseInputs& in, SolverKind kind, int steps,
                                 double shift, float g_high, float g_low) {
  auto solver = make_flow_solver(kind, steps, shift);
  const Tensor cond = m.dit->embed_text(in.context.states),
               uncond = m.dit->embed_text(in.context_neg.states);
  Tensor x = in.x.clone();
  for (int k = 0; k < steps; ++k) {
    const float timestep = solver->schedule().timesteps[k];
    const Tensor t = Tensor::from_vector({timestep}, {1});
    const auto c = m.be->download(m.dit->forward(x, t, cond)).to_vector();
    const auto u = m.be->download(m.dit->forward(x, t, uncond)).to_vector();
    solver->step(Tensor::from_vector(guided(c, u, timestep >= 875.0f ? g_high : g_low), x.shape()),
                 x);
  }
  return x.to_vector();
}

TEST(DenoiseSolvers, UniPCWithAScalePerExpertEqualsTheHandWrittenLoop) {
  Model m("dit_t2v_tiny.safetensors");
  auto low = wan::load_dit(wan::open_model(m.file->path()), *m.be);
  DenoiseInputs in{m.file->tensor_f32("input.x"), m.file->tensor_f32("input.context"), {}, {}, {}};
  in.context_neg = negated(in.context.states);
  DenoiseOptions opt;
  opt.solver = SolverKind::UniPC;
  opt.steps = 4;
  opt.shift = 5.0;
  opt.guidance_high = 4.0f;
  opt.guidance_low = 3.0f;
  std::vector<StepInfo> steps;
  const Tensor got =
      denoise(*m.dit, low.get(), in, opt, [&](const StepInfo& s) { steps.push_back(s); });
  ASSERT_EQ(steps.size(), 4u);
  const float timesteps[] = {999, 937, 833, 624};  // the solver's, not Euler's
  const bool high[] = {true, true, false, false};
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(steps[k].timestep, timesteps[k]) << k;
    EXPECT_EQ(steps[k].high_noise_expert, high[k]) << k;
    EXPECT_EQ(steps[k].guidance, high[k] ? 4.0f : 3.0f) << k;
    EXPECT_EQ(steps[k].model_timestep.to_vector(), std::vector<float>{timesteps[k]}) << k;
  }
  const Shape shape = in.x.shape();
  const auto want = hand_loop_t2v(m, in, SolverKind::UniPC, 4, 5.0, 4.0f, 3.0f);
  // Same ops in the same order on one CPU: only a different summation could separate them.
  EXPECT_LE(rel_l2(got, Tensor::from_vector(want, shape)), 1e-6);
  // The check can fail: swapped scales or another solver give another latent.
  const auto swapped = hand_loop_t2v(m, in, SolverKind::UniPC, 4, 5.0, 3.0f, 4.0f);
  EXPECT_GT(rel_l2(got, Tensor::from_vector(swapped, shape)), 1e-3);
  const auto dpm = hand_loop_t2v(m, in, SolverKind::DpmPP, 4, 5.0, 4.0f, 3.0f);
  EXPECT_GT(rel_l2(got, Tensor::from_vector(dpm, shape)), 1e-3);
}

TEST(DenoiseSolvers, DpmWithGuidanceOneSkipsTheUnconditionalPass) {
  Model m("dit_t2v_tiny.safetensors");
  DenoiseInputs in{m.file->tensor_f32("input.x"), m.file->tensor_f32("input.context"), {}, {}, {}};
  DenoiseOptions opt;
  opt.solver = SolverKind::DpmPP;
  opt.steps = 3;
  opt.shift = 12.0;
  opt.guidance = 7.0f;  // overridden for both kinds of step: no context_neg needed
  opt.guidance_high = 1.0f;
  opt.guidance_low = 1.0f;
  const Tensor got = denoise(*m.dit, nullptr, in, opt);
  auto solver = make_flow_solver(SolverKind::DpmPP, 3, 12.0);
  const Tensor cond = m.dit->embed_text(in.context.states);
  Tensor x = in.x.clone();
  for (int k = 0; k < 3; ++k) {
    const Tensor t = Tensor::from_vector({solver->schedule().timesteps[k]}, {1});
    solver->step(m.be->download(m.dit->forward(x, t, cond)), x);
  }
  EXPECT_LE(rel_l2(got, x), 1e-6);
  // A scale != 1 on the low-noise steps needs the negative context.
  opt.guidance_low = 2.0f;
  EXPECT_THROW(denoise(*m.dit, nullptr, in, opt), Error);
}

// TI2V by hand, as wan/textimage2video.py does it: frame 0 = the image latent, t = 0 on its
// tokens, frame 0 put back after every solver step.
Tensor hand_loop_ti2v(Model& m, const Tensor& noise, const Tensor& z, const Tensor& context,
                      int steps, bool per_token_t) {
  auto solver = make_flow_solver(SolverKind::UniPC, steps, 5.0);
  const Tensor cond = m.dit->embed_text(context);
  const int64_t C = noise.dim(0), F = noise.dim(1), HW = noise.dim(2) * noise.dim(3);
  auto put_image = [&](Tensor& x) {  // (1 - mask) z + mask x, mask 0 on frame 0
    for (int64_t c = 0; c < C; ++c)
      for (int64_t f = 0; f < F; ++f)
        for (int64_t i = 0; i < HW; ++i) {
          const float mask = f == 0 ? 0.0f : 1.0f;
          float& v = x.f32()[(c * F + f) * HW + i];
          v = (1.0f - mask) * z.f32()[c * HW + i] + mask * v;
        }
  };
  Tensor x = noise.clone();
  put_image(x);
  const int64_t tokens = F * (noise.dim(2) / 2) * (noise.dim(3) / 2);
  for (int k = 0; k < steps; ++k) {
    const float timestep = solver->schedule().timesteps[k];
    std::vector<float> tv(static_cast<size_t>(tokens), timestep);
    for (int64_t i = 0; i < tokens; ++i)
      if (i / (tokens / F) == 0) tv[i] = 0.0f;  // tokens of latent frame 0
    const Tensor t =
        per_token_t ? Tensor::from_vector(tv, {1, tokens}) : Tensor::from_vector({timestep}, {1});
    solver->step(m.be->download(m.dit->forward(x, t, cond)), x);
    put_image(x);
  }
  return x;
}

TEST(DenoiseTi2v, FirstFrameStaysTheImageAndItsTokensGetTimestepZero) {
  Model m("dit_ti2v_tiny.safetensors");
  const Tensor noise = m.file->tensor_f32("input.noise");
  const Tensor z = m.file->tensor_f32("input.image_latent");  // [48, 1, 8, 8]
  DenoiseInputs in{noise, m.file->tensor_f32("input.context"), {}, {}, z};
  DenoiseOptions opt;
  opt.solver = SolverKind::UniPC;
  opt.steps = 3;
  opt.shift = 5.0;
  std::vector<StepInfo> steps;
  const Tensor got =
      denoise(*m.dit, nullptr, in, opt, [&](const StepInfo& s) { steps.push_back(s); });

  // Frame 0 is bit-for-bit the image latent; the other frames were denoised.
  const int64_t C = noise.dim(0), F = noise.dim(1), HW = noise.dim(2) * noise.dim(3);
  for (int64_t c = 0; c < C; ++c)
    ASSERT_EQ(std::memcmp(got.f32() + c * F * HW, z.f32() + c * HW, HW * sizeof(float)), 0) << c;
  EXPECT_GT(rel_l2(got, noise), 0.1);

  // The DiT got [1, 144]: t = 0 on the 16 tokens of frame 0 (grid 9 x 4 x 4), t elsewhere.
  ASSERT_EQ(steps.size(), 3u);
  for (const StepInfo& s : steps) {
    ASSERT_EQ(s.model_timestep.shape(), (Shape{1, 144})) << s.step;
    const std::vector<float> t = s.model_timestep.to_vector();
    for (int i = 0; i < 144; ++i) EXPECT_EQ(t[i], i < 16 ? 0.0f : s.timestep) << s.step << " " << i;
  }
  EXPECT_EQ(steps[0].timestep, 999.0f);

  const Tensor want = hand_loop_ti2v(m, noise, z, in.context.states, 3, true);
  EXPECT_LE(rel_l2(got, want), 1e-6);
  // One timestep for every token gives another result: the per-token t reached the DiT.
  const Tensor plain = hand_loop_ti2v(m, noise, z, in.context.states, 3, false);
  EXPECT_GT(rel_l2(got, plain), 1e-4);
}

TEST(DenoiseTi2v, ClearErrorsForAMisfitImageLatent) {
  Model ti2v("dit_ti2v_tiny.safetensors");
  const Tensor noise = ti2v.file->tensor_f32("input.noise");
  DenoiseInputs in{
      noise, ti2v.file->tensor_f32("input.context"), {}, {}, Tensor::zeros({48, 2, 8, 8})};
  DenoiseOptions opt;
  try {
    denoise(*ti2v.dit, nullptr, in, opt);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'z_image' must be [48, 1, 8, 8]"), std::string::npos)
        << e.what();
  }
  Model t2v("dit_t2v_tiny.safetensors");
  DenoiseInputs t2v_in{t2v.file->tensor_f32("input.x"),
                       t2v.file->tensor_f32("input.context"),
                       {},
                       {},
                       Tensor::zeros({16, 1, 8, 8})};
  try {
    denoise(*t2v.dit, nullptr, t2v_in, opt);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ti2v model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fisdit::sched
