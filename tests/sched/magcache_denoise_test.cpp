// MagCache in the sampling loop on the tiny fixture DiT: threshold 0 is the dense run bit for
// bit, skipped passes apply exactly the residual cached by the last computed pass, and FIS runs
// on the computed ones.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/loader.h"
#include "sched/denoise.h"

namespace fisdit::sched {
namespace {

struct Model {
  Model()
      : file(
            SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors")),
        dit(wan::load_dit(wan::open_model(file->path()), *be)) {}
  std::unique_ptr<Backend> be = make_cpu_backend();
  std::shared_ptr<SafetensorsFile> file;
  std::unique_ptr<wan::WanDiT> dit;
};

DenoiseInputs inputs(Model& m, bool negative) {
  DenoiseInputs in{m.file->tensor_f32("input.x"), m.file->tensor_f32("input.context"), {}, {}, {}};
  if (negative) {
    Tensor neg = in.context.states.clone();
    for (int64_t i = 0; i < neg.numel(); ++i) neg.f32()[i] *= -0.5f;
    in.context_neg = neg;
  }
  return in;
}

accel::MagCacheConfig magcache(double threshold, int k, double retention, bool force) {
  accel::MagCacheConfig c;
  c.enabled = true;
  c.threshold = threshold;
  c.max_skips = k;
  c.retention = retention;
  c.force = force;
  c.ratios.cond = {1.0, 0.99, 1.01, 0.98};
  c.ratios.uncond = {1.0, 0.97, 1.02, 0.99};
  return c;
}

TEST(MagCacheDenoise, ThresholdZeroOrKZeroIsTheDenseRunBitForBit) {
  Model m;
  auto low = wan::load_dit(wan::open_model(m.file->path()), *m.be);
  const DenoiseInputs in = inputs(m, true);
  DenoiseOptions opt;
  opt.solver = SolverKind::UniPC;
  opt.steps = 4;
  opt.guidance_high = 4.0f;
  opt.guidance_low = 3.0f;
  opt.fis = accel::fis_preset("balanced");
  const Tensor dense = denoise(*m.dit, low.get(), in, opt);
  int skipped = 0;
  for (const auto& cache : {magcache(0.0, 2, 0.0, false), magcache(10.0, 0, 0.0, true)}) {
    opt.cache = cache;
    const Tensor got = denoise(*m.dit, low.get(), in, opt,
                               [&](const StepInfo& s) { skipped += s.skipped_passes; });
    EXPECT_EQ(got.to_vector(), dense.to_vector()) << cache.describe();
  }
  EXPECT_EQ(skipped, 0);
  // The check can fail: a generous threshold skips passes and changes the latent.
  opt.cache = magcache(10.0, 2, 0.0, false);
  std::vector<StepInfo> steps;
  const Tensor skipping =
      denoise(*m.dit, low.get(), in, opt, [&](const StepInfo& s) { steps.push_back(s); });
  EXPECT_GT(rel_l2(skipping, dense), 1e-4);
  // Two experts of two steps each, retention 0 -> one retained step per expert phase: steps
  // 2 and 4 skip both CFG passes, and nothing is carried across the expert switch.
  ASSERT_EQ(steps.size(), 4u);
  const int want[] = {0, 2, 0, 2};
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(steps[k].passes, 2);
    EXPECT_EQ(steps[k].skipped_passes, want[k]) << k;
  }
  EXPECT_EQ(cache_note(steps[1]), "  cache skip");
}

// The loop by hand with the DiT's residual hooks: computed steps keep the block-stack residual,
// skipped ones apply the kept tensor unchanged; FIS balanced on the computed steps.
TEST(MagCacheDenoise, SkippedStepsApplyTheCachedResidualExactly) {
  Model m;
  const DenoiseInputs in = inputs(m, false);
  DenoiseOptions opt;
  opt.steps = 4;
  opt.fis = accel::fis_preset("balanced");
  opt.cache = magcache(0.0, 1, 0.0, true);  // force, K 1: computed, skipped, computed, skipped
  std::string pattern;
  const Tensor got = denoise(*m.dit, nullptr, in, opt,
                             [&](const StepInfo& s) { pattern += s.skipped_passes ? 'S' : 'C'; });
  EXPECT_EQ(pattern, "CSCS");

  const accel::FisPlan plan(opt.fis, m.dit->config().num_layers, 4, static_cast<int>(in.x.dim(1)));
  auto solver = make_flow_solver(SolverKind::Euler, 4, opt.shift);
  const Tensor text = m.dit->embed_text(in.context.states);
  Tensor x = in.x.clone(), residual;
  for (int k = 0; k < 4; ++k) {
    const Tensor t = Tensor::from_vector({solver->schedule().timesteps[k]}, {1});
    wan::BlockStackResidual stack;
    if (k % 2)
      stack.apply = &residual;
    else
      stack.keep = &residual;
    solver->step(m.be->download(m.dit->forward(x, t, text, &plan, plan.step_open(k), {}, stack)),
                 x);
  }
  EXPECT_EQ(got.to_vector(), x.to_vector());
}

TEST(MagCacheDenoise, AppliedResidualStandsInForTheBlocks) {
  Model m;
  const DenoiseInputs in = inputs(m, false);
  const Tensor text = m.dit->embed_text(in.context.states);
  const Tensor t = Tensor::from_vector({900.0f}, {1});
  Tensor residual;
  const Tensor computed = m.dit->forward(in.x, t, text, nullptr, true, {}, {nullptr, &residual});
  EXPECT_EQ(computed.to_vector(), m.dit->forward(in.x, t, text).to_vector());  // keeping is free
  ASSERT_EQ(residual.shape(), (Shape{9 * 4 * 4, m.dit->config().dim}));
  // patch_embed(x) + (blocks(h) - h) equals blocks(h) up to float rounding.
  const Tensor applied = m.dit->forward(in.x, t, text, nullptr, true, {}, {&residual, nullptr});
  EXPECT_LE(rel_l2(applied, computed), 1e-6);
  Tensor zero = Tensor::zeros(residual.shape());
  const Tensor no_blocks = m.dit->forward(in.x, t, text, nullptr, true, {}, {&zero, nullptr});
  EXPECT_GT(rel_l2(no_blocks, computed), 1e-2);
  Tensor wrong = Tensor::zeros({3, m.dit->config().dim});
  EXPECT_THROW(m.dit->forward(in.x, t, text, nullptr, true, {}, {&wrong, nullptr}), Error);
}

TEST(MagCacheDenoise, ResidualObserverSeesEveryComputedPass) {
  Model m;
  const DenoiseInputs in = inputs(m, true);
  DenoiseOptions opt;
  opt.steps = 3;
  opt.guidance = 2.0f;
  std::vector<std::pair<int, int>> seen;
  opt.on_residual = [&](int step, int branch, bool high, const Tensor& r) {
    EXPECT_TRUE(high);
    EXPECT_EQ(r.dim(1), m.dit->config().dim);
    seen.push_back({step, branch});
  };
  denoise(*m.dit, nullptr, in, opt);
  EXPECT_EQ(seen,
            (std::vector<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}}));
  // Ratios without an unconditional list do not fit a guided run.
  opt.cache = magcache(0.1, 2, 0.2, false);
  opt.cache.ratios.uncond.clear();
  try {
    denoise(*m.dit, nullptr, in, opt);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("uncond"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fisdit::sched
