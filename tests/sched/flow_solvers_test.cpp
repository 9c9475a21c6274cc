// The official Wan flow solvers (UniPC, DPM++) against runs of the official schedulers
// (tests/data/wan/sched.safetensors, see tests/data/wan/README.md "sched").
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <regex>

#include "fisdit/error.h"
#include "io/safetensors.h"
#include "sched/flow_euler.h"
#include "sched/flow_solvers.h"

namespace fisdit::sched {
namespace {

std::shared_ptr<SafetensorsFile> sched_fixture() {
  return SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/sched.safetensors");
}

// The fixture's solver prefix of a solver.
const char* fixture_name(SolverKind kind) { return kind == SolverKind::UniPC ? "unipc" : "dpmpp"; }

struct Tag {
  std::string name;  // s{steps}_sh{shift}
  int steps = 0;
  double shift = 0;
};

// Every tag the fixture has timesteps for, with its solver.
std::vector<std::pair<SolverKind, Tag>> fixture_tags(const SafetensorsFile& f) {
  static const std::regex re(R"(expected\.(unipc|dpmpp)_(s(\d+)_sh([0-9.]+))_timesteps)");
  std::vector<std::pair<SolverKind, Tag>> tags;
  for (const TensorInfo& t : f.tensors()) {
    std::smatch m;
    if (!std::regex_match(t.name, m, re)) continue;
    tags.push_back({m[1] == "unipc" ? SolverKind::UniPC : SolverKind::DpmPP,
                    {m[2], std::stoi(m[3]), std::stod(m[4])}});
  }
  return tags;
}

// Step k of a stacked [steps, ...] tensor as a host tensor of `shape`.
Tensor step_slice(const Tensor& stacked, int64_t k, const Shape& shape) {
  return stacked.slice_rows(k, k + 1).reshape(shape).clone();
}

// Runs `kind` over the fixture's model outputs of `tag`; returns the sample after every step.
std::vector<Tensor> run_solver(SolverKind kind, const SafetensorsFile& f, const Tag& tag,
                               const std::map<int, float>& perturb = {}) {
  Tensor x = f.tensor_f32("input." + tag.name + "_sample");
  const Tensor outputs = f.tensor_f32("input." + tag.name + "_model_outputs");
  auto solver = make_flow_solver(kind, tag.steps, tag.shift);
  std::vector<Tensor> samples;
  for (int k = 0; k < tag.steps; ++k) {
    Tensor v = step_slice(outputs, k, x.shape());
    if (auto it = perturb.find(k); it != perturb.end())
      for (int64_t i = 0; i < v.numel(); ++i) v.f32()[i] *= it->second;
    solver->step(v, x);
    samples.push_back(x.clone());
  }
  return samples;
}

TEST(FlowSolverSchedule, MatchesTheOfficialTimestepsAndSigmasForEveryTag) {
  const auto f = sched_fixture();
  const auto tags = fixture_tags(*f);
  // s4_sh5, s40_sh12, s40_sh5, s50_sh5, s50_sh12 for both solvers (at least).
  ASSERT_GE(tags.size(), 10u);
  double worst_sigma = 0;
  for (const auto& [kind, tag] : tags) {
    SCOPED_TRACE(std::string(fixture_name(kind)) + "_" + tag.name);
    const std::string prefix = std::string("expected.") + fixture_name(kind) + "_" + tag.name;
    const FlowSchedule s = flow_schedule(kind, tag.steps, tag.shift);
    const Tensor ts = f->tensor(prefix + "_timesteps");
    ASSERT_EQ(ts.dtype(), DType::I64);
    ASSERT_EQ(ts.numel(), tag.steps);
    ASSERT_EQ(s.timesteps.size(), static_cast<size_t>(tag.steps));
    for (int k = 0; k < tag.steps; ++k) {
      // Whole numbers, exactly the official int64 values.
      EXPECT_EQ(s.timesteps[k], std::trunc(s.timesteps[k])) << k;
      EXPECT_EQ(static_cast<int64_t>(s.timesteps[k]), ts.data_as<int64_t>()[k]) << k;
    }
    const Tensor sg = f->tensor_f32(prefix + "_sigmas");
    ASSERT_EQ(s.sigmas.size(), static_cast<size_t>(sg.numel()));
    for (size_t k = 0; k < s.sigmas.size(); ++k) {
      const double want = sg.f32()[k];
      const double err = std::abs(s.sigmas[k] - want) / std::max(std::abs(want), 1e-30);
      worst_sigma = std::max(worst_sigma, want == 0 ? std::abs(s.sigmas[k] - want) : err);
      // The official table is F32 from the same double: 1e-6 relative leaves room for one ulp.
      EXPECT_LE(want == 0 ? std::abs(s.sigmas[k]) : err, 1e-6) << k;
    }
  }
  std::printf("[ sched    ] worst sigma rel error %.3g over %zu schedules\n", worst_sigma,
              tags.size());
}

TEST(FlowSolverSchedule, KnownValuesOfTheFourStepShiftFiveSchedules) {
  // From the official code's definitions (README "sched", Facts).
  const FlowSchedule unipc = flow_unipc_schedule(4, 5.0);
  const FlowSchedule dpm = flow_dpm_schedule(4, 5.0);
  EXPECT_EQ(unipc.timesteps, (std::vector<float>{999, 937, 833, 624}));
  EXPECT_EQ(dpm.timesteps, (std::vector<float>{1000, 937, 833, 625}));
  EXPECT_FLOAT_EQ(unipc.sigmas[0], static_cast<float>(5 * 0.999f / (1 + 4 * 0.999f)));
  EXPECT_EQ(dpm.sigmas[0], 1.0f);
  EXPECT_EQ(unipc.sigmas.back(), 0.0f);
  EXPECT_EQ(dpm.sigmas.back(), 0.0f);
  // Euler keeps its non-integer timesteps (sigma * 1000).
  EXPECT_FLOAT_EQ(flow_schedule(SolverKind::Euler, 4, 5.0).timesteps[1], 937.5f);
  EXPECT_THROW(flow_unipc_schedule(0, 5.0), Error);
  EXPECT_THROW(flow_dpm_schedule(4, 0.0), Error);
  EXPECT_THROW(flow_dpm_schedule(4, std::nan("")), Error);
}

TEST(FlowSolver, EveryStepMatchesTheOfficialRuns) {
  const auto f = sched_fixture();
  int runs = 0;
  for (const auto& [kind, tag] : fixture_tags(*f)) {
    const std::string expected_name =
        std::string("expected.") + fixture_name(kind) + "_" + tag.name + "_samples";
    if (!f->contains(expected_name)) continue;  // a schedules-only tag
    SCOPED_TRACE(expected_name);
    ++runs;
    const Tensor expected = f->tensor_f32(expected_name);
    const Shape shape = f->tensor_f32("input." + tag.name + "_sample").shape();
    const std::vector<Tensor> got = run_solver(kind, *f, tag);
    ASSERT_EQ(static_cast<int64_t>(got.size()), expected.dim(0));
    double worst = 0;
    for (int k = 0; k < tag.steps; ++k) {
      const double err = rel_l2(got[k], step_slice(expected, k, shape));
      worst = std::max(worst, err);
      // The README's scheduler bound: float32 torch scalars vs double here differ in the last
      // bits of each coefficient; 1e-5 is far below what a wrong order or coefficient gives.
      EXPECT_LE(err, 1e-5) << "step " << k;
    }
    std::printf("[ sched    ] %s %s: worst per-step sample rel L2 %.3g\n", fixture_name(kind),
                tag.name.c_str(), worst);
  }
  EXPECT_GE(runs, 4);  // s4_sh5 and s40_sh12, both solvers
}

TEST(FlowSolver, TheTestsCanFail) {
  const auto f = sched_fixture();
  const Tag tag{"s4_sh5", 4, 5.0};
  const Tensor unipc_expected = f->tensor_f32("expected.unipc_s4_sh5_samples");
  const Shape shape = f->tensor_f32("input.s4_sh5_sample").shape();
  // The other solver misses the official UniPC run by far more than the tolerance.
  const std::vector<Tensor> dpm = run_solver(SolverKind::DpmPP, *f, tag);
  EXPECT_GT(rel_l2(dpm[1], step_slice(unipc_expected, 1, shape)), 1e-3);
  const std::vector<Tensor> euler = run_solver(SolverKind::Euler, *f, tag);
  EXPECT_GT(rel_l2(euler[3], step_slice(unipc_expected, 3, shape)), 1e-3);
  // A perturbed model output at step 2 leaves steps 0-1 alone and moves steps 2 and 3.
  for (SolverKind kind : {SolverKind::UniPC, SolverKind::DpmPP}) {
    SCOPED_TRACE(fixture_name(kind));
    const std::vector<Tensor> base = run_solver(kind, *f, tag);
    const std::vector<Tensor> bumped = run_solver(kind, *f, tag, {{2, 1.001f}});
    EXPECT_EQ(rel_l2(bumped[1], base[1]), 0.0);
    EXPECT_GT(rel_l2(bumped[2], base[2]), 1e-5);
    EXPECT_GT(rel_l2(bumped[3], base[3]), 1e-5);
  }
}

TEST(FlowSolver, RefusesBadUse) {
  auto solver = make_flow_solver(SolverKind::UniPC, 1, 5.0);
  Tensor x = Tensor::zeros({2, 3});
  EXPECT_THROW(solver->step(Tensor::zeros({3, 2}), x), Error);  // shape mismatch
  solver->step(Tensor::zeros({2, 3}), x);
  EXPECT_EQ(solver->next_step(), 1);
  EXPECT_THROW(solver->step(Tensor::zeros({2, 3}), x), Error);  // past the last step
  EXPECT_EQ(parse_solver("euler"), SolverKind::Euler);
  EXPECT_EQ(parse_solver("unipc"), SolverKind::UniPC);
  EXPECT_EQ(parse_solver("dpm++"), SolverKind::DpmPP);
  try {
    parse_solver("heun");
    FAIL() << "no error";
  } catch (const ParamError& e) {
    EXPECT_EQ(e.param(), "solver");
    EXPECT_NE(std::string(e.what()).find("heun"), std::string::npos) << e.what();
  }
}

TEST(FlowSolver, EulerStepsAreTheLightningUpdate) {
  const EulerSchedule e = flow_euler_schedule(4, 5.0f);
  auto solver = make_flow_solver(SolverKind::Euler, 4, 5.0);
  Tensor x = Tensor::from_vector({1.0f, -2.0f}, {2});
  const Tensor v = Tensor::from_vector({0.5f, 3.0f}, {2});
  solver->step(v, x);
  const float dt = e.sigmas[1] - e.sigmas[0];
  EXPECT_EQ(x.f32()[0], 1.0f + dt * 0.5f);
  EXPECT_EQ(x.f32()[1], -2.0f + dt * 3.0f);
}

}  // namespace
}  // namespace fisdit::sched
